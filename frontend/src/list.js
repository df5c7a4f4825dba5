// The document list: GET /api/docs, refreshed every few seconds; a field that
// opens (or creates) a document by name; upload; rename, download, delete.
import './style.css'
import {
  ApiError, api, editorHref, formatLength, formatWhen, getToken, h, keepTokenInLinks, setToken, toast, tokenFromInput
} from './common.js'
import { deleteDocument, downloadDocument, explain, renameDocument, uploadFile } from './actions.js'
import { menu } from './dialog.js'

const body = document.getElementById('docs-body')
const table = document.getElementById('docs')
const empty = document.getElementById('docs-empty')
const count = document.getElementById('docs-count')
const error = document.getElementById('docs-error')
const form = document.getElementById('open-form')
const input = document.getElementById('open-name')
const tokenForm = document.getElementById('token-form')

keepTokenInLinks()

form.addEventListener('submit', (event) => {
  event.preventDefault()
  const name = input.value.trim()
  if (name) location.assign(editorHref(name))
})

// --- upload ------------------------------------------------------------------

const uploadButton = document.getElementById('upload')
const uploadInput = document.getElementById('upload-file')
uploadButton.addEventListener('click', () => uploadInput.click())
uploadInput.addEventListener('change', async () => {
  const file = uploadInput.files?.[0]
  uploadInput.value = ''
  if (!file) return
  uploadButton.disabled = true
  uploadButton.textContent = 'Uploading…'
  try {
    const name = await uploadFile(file)
    location.assign(editorHref(name))
  } catch (err) {
    toast(err.message, { kind: 'error', ms: 6000 })
  } finally {
    uploadButton.disabled = false
    uploadButton.textContent = 'Upload…'
  }
})

// --- the table ---------------------------------------------------------------

function actionsFor (doc) {
  const button = h('button', { type: 'button', class: 'icon-button row-menu', 'aria-label': `Actions for ${doc.name}`, title: 'Actions' },
    h('span', { 'aria-hidden': 'true' }, '⋯'))
  const wrap = h('div', { class: 'row-actions' }, button)
  menu(button, [
    { label: 'Open', run: () => location.assign(editorHref(doc.name)) },
    { label: 'Rename…', run: async () => { if (await renameDocument(doc.name)) refresh() } },
    { label: 'Download as Markdown (.md)', run: () => download(doc.name, 'md') },
    { label: 'Download as plain text (.txt)', run: () => download(doc.name, 'txt') },
    null,
    { label: 'Delete…', danger: true, run: async () => { if (await deleteDocument(doc.name)) { toast(`Deleted “${doc.name}”`); refresh() } } }
  ])
  return wrap
}

async function download (name, format) {
  try {
    await downloadDocument(name, format)
  } catch (err) {
    toast(explain(err), { kind: 'error' })
  }
}

function row (doc) {
  const people = doc.connections > 0
    ? h('span', { class: 'live' }, h('span', { class: 'live-dot', 'aria-hidden': 'true' }), `${doc.connections} here`)
    : h('span', { class: 'muted' }, '—')
  const when = doc.updated_at == null ? null : new Date(doc.updated_at * 1000).toLocaleString()
  return h('tr', { 'data-doc': doc.name },
    h('td', { class: 'name' }, h('a', { href: editorHref(doc.name) },
      h('span', { class: 'doc-icon', 'aria-hidden': 'true' }), h('span', { class: 'doc-name' }, doc.name))),
    h('td', { class: 'num muted length' }, formatLength(doc.length)),
    h('td', {}, people),
    h('td', { class: 'muted', title: when }, formatWhen(doc.updated_at)),
    h('td', { class: 'actions' }, actionsFor(doc))
  )
}

const openMenus = () => document.querySelector('.row-actions .menu:not([hidden])')

async function refresh () {
  if (openMenus()) return // do not rebuild a row under an open menu
  try {
    const { docs } = await api('/api/docs')
    docs.sort((a, b) => (b.connections - a.connections) || ((b.updated_at ?? 0) - (a.updated_at ?? 0)) || a.name.localeCompare(b.name))
    body.replaceChildren(...docs.map(row))
    table.hidden = docs.length === 0
    empty.hidden = docs.length !== 0
    count.textContent = docs.length ? `${docs.length} document${docs.length === 1 ? '' : 's'}` : ''
    error.hidden = true
    tokenForm.hidden = true
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      document.getElementById('token-why').textContent = err.code === 'expired' || err.code === 'token_expired'
        ? 'Your access has expired: paste the new token or link you were given.'
        : getToken()
          ? 'The token in this link is not valid here: paste the token or link you were given.'
          : 'Paste the token or the link you were given.'
      tokenForm.hidden = false
      error.hidden = true
      table.hidden = true
      empty.hidden = true
      return
    }
    error.textContent = `Could not load the documents: ${explain(err)}${err.status ? ` (${err.status})` : ''}`
    error.hidden = false
  }
}

tokenForm.addEventListener('submit', (event) => {
  event.preventDefault()
  const token = tokenFromInput(document.getElementById('token-input').value)
  if (!token) return
  setToken(token)
  refresh()
})

refresh()
setInterval(() => { if (!document.hidden) refresh() }, 5000)
document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh() })
