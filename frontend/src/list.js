// The document list: GET /api/docs, refreshed every few seconds, and a field
// that opens (or creates) a document by name.
import './style.css'
import { api, editorHref, formatBytes, formatWhen, h, withToken } from './common.js'

const body = document.getElementById('docs-body')
const table = document.getElementById('docs')
const empty = document.getElementById('docs-empty')
const count = document.getElementById('docs-count')
const error = document.getElementById('docs-error')
const form = document.getElementById('open-form')
const input = document.getElementById('open-name')

for (const link of document.querySelectorAll('a[data-keep-token]')) {
  link.href = withToken(link.getAttribute('href'))
}

form.addEventListener('submit', (event) => {
  event.preventDefault()
  const name = input.value.trim()
  if (name) location.assign(editorHref(name))
})

function row (doc) {
  const people = doc.connections > 0
    ? h('span', { class: 'live' }, h('span', { class: 'live-dot', 'aria-hidden': 'true' }), `${doc.connections} here`)
    : h('span', { class: 'muted' }, '—')
  const when = doc.updated_at == null ? null : new Date(doc.updated_at * 1000).toLocaleString()
  return h('tr', { 'data-doc': doc.name },
    h('td', { class: 'name' }, h('a', { href: editorHref(doc.name) },
      h('span', { class: 'doc-icon', 'aria-hidden': 'true' }), h('span', { class: 'doc-name' }, doc.name))),
    h('td', { class: 'num muted' }, formatBytes(doc.size)),
    h('td', {}, people),
    h('td', { class: 'muted', title: when }, formatWhen(doc.updated_at))
  )
}

async function refresh () {
  try {
    const { docs } = await api('/api/docs')
    docs.sort((a, b) => (b.connections - a.connections) || ((b.updated_at ?? 0) - (a.updated_at ?? 0)) || a.name.localeCompare(b.name))
    body.replaceChildren(...docs.map(row))
    table.hidden = docs.length === 0
    empty.hidden = docs.length !== 0
    count.textContent = docs.length ? `${docs.length} document${docs.length === 1 ? '' : 's'}` : ''
    error.hidden = true
  } catch (err) {
    error.textContent = `Could not load the documents (${err.message}).`
    error.hidden = false
  }
}

refresh()
setInterval(() => { if (!document.hidden) refresh() }, 5000)
document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh() })
