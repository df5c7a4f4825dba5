// The editor: CodeMirror 6 bound to ydoc.getText('text') by y-codemirror.next,
// synced through the stock y-websocket provider to /ws/{doc} on this host.
import './style.css'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { yCollab, yUndoManagerKeymap } from 'y-codemirror.next'
import { EditorState } from '@codemirror/state'
import {
  EditorView, keymap, drawSelection, dropCursor, highlightActiveLine,
  highlightSpecialChars, placeholder, rectangularSelection, crosshairCursor
} from '@codemirror/view'
import { defaultKeymap, indentWithTab } from '@codemirror/commands'
import { HighlightStyle, LanguageSupport, syntaxHighlighting, indentOnInput, bracketMatching } from '@codemirror/language'
// markdownLanguage alone (not markdown()): highlighting without bundling HTML/CSS/JS parsers.
import { markdownKeymap, markdownLanguage } from '@codemirror/lang-markdown'
import { highlightSelectionMatches, search, searchKeymap } from '@codemirror/search'
import { tags } from '@lezer/highlight'
import {
  PALETTE, colorFor, h, initials, lighten, loadUser, saveUser, token, tokenClaims, websocketBase, withToken
} from './common.js'

// --- which document --------------------------------------------------------

/** The document name from /d/{URL-encoded name} (a raw "/" in the rest is part of the name). */
function documentName () {
  const rest = location.pathname.replace(/^\/d\//, '')
  try {
    return decodeURIComponent(rest)
  } catch {
    return rest
  }
}

const name = documentName()
document.title = `${name} · collab`
document.getElementById('doc-title').textContent = name
document.getElementById('doc-title').title = name
for (const link of document.querySelectorAll('a[data-keep-token]')) {
  link.href = withToken(link.getAttribute('href'))
}
// A read-only token: the server refuses our edits, so do not offer to make any.
const readOnly = tokenClaims().mode === 'read'
document.getElementById('read-only').hidden = !readOnly

// --- sync ------------------------------------------------------------------

const ydoc = new Y.Doc()
const ytext = ydoc.getText('text')
// y-websocket appends the room to the URL as is: encode it here, the server decodes it.
const provider = new WebsocketProvider(websocketBase(), encodeURIComponent(name), ydoc, {
  params: token ? { token } : {}
})
const awareness = provider.awareness

let user = loadUser()
awareness.setLocalStateField('user', user)

// --- the editor ------------------------------------------------------------

const undoManager = new Y.UndoManager(ytext)

const highlight = HighlightStyle.define([
  { tag: tags.heading1, fontSize: '1.6em', fontWeight: '700', letterSpacing: '-0.01em' },
  { tag: tags.heading2, fontSize: '1.3em', fontWeight: '700' },
  { tag: tags.heading3, fontSize: '1.1em', fontWeight: '650' },
  { tag: [tags.heading4, tags.heading5, tags.heading6], fontWeight: '650' },
  { tag: tags.strong, fontWeight: '700' },
  { tag: tags.emphasis, fontStyle: 'italic' },
  { tag: tags.strikethrough, textDecoration: 'line-through' },
  { tag: tags.link, color: 'var(--accent)', textDecoration: 'underline' },
  { tag: tags.url, color: 'var(--accent)' },
  { tag: tags.monospace, fontFamily: 'var(--mono)', fontSize: '0.92em', color: '#9a3412' },
  { tag: tags.quote, color: 'var(--ink-2)', fontStyle: 'italic' },
  { tag: [tags.processingInstruction, tags.meta], color: 'var(--ink-3)' },
  { tag: tags.list, color: 'var(--ink-1)' },
  { tag: tags.contentSeparator, color: 'var(--ink-3)' }
])

const theme = EditorView.theme({
  '&': { fontSize: '17px', color: 'var(--ink-1)', backgroundColor: 'transparent' },
  '&.cm-focused': { outline: 'none' },
  '.cm-scroller': { fontFamily: 'var(--sans)', lineHeight: '1.7', overflow: 'visible' },
  '.cm-content': { padding: '8px 0 40vh', caretColor: 'var(--ink-1)' },
  '.cm-line': { padding: '0 2px' },
  '.cm-activeLine': { backgroundColor: 'transparent' },
  '.cm-cursor, .cm-dropCursor': { borderLeftColor: 'var(--ink-1)', borderLeftWidth: '2px' },
  '&.cm-focused > .cm-scroller > .cm-selectionLayer .cm-selectionBackground, .cm-selectionBackground, ::selection':
    { backgroundColor: 'var(--selection) !important' },
  '.cm-placeholder': { color: 'var(--ink-3)', fontStyle: 'normal' },
  // Remote carets carry their owner's name at all times, like a name tag.
  '.cm-ySelectionCaret': { borderLeftWidth: '2px', borderRightWidth: '0', marginLeft: '-1px', marginRight: '-1px' },
  '.cm-ySelectionCaretDot': { display: 'none' },
  '.cm-ySelectionInfo': {
    opacity: '1',
    top: '-1.45em',
    left: '-2px',
    padding: '1px 6px',
    borderRadius: '4px 4px 4px 0',
    fontFamily: 'var(--sans)',
    fontSize: '11px',
    fontWeight: '600',
    lineHeight: '1.5',
    letterSpacing: '0.01em',
    boxShadow: '0 1px 2px rgba(15, 23, 42, 0.15)'
  },
  '.cm-panels': { backgroundColor: 'var(--surface)', color: 'var(--ink-1)' },
  '.cm-panels.cm-panels-top': { borderBottom: '1px solid var(--line)' },
  '.cm-searchMatch': { backgroundColor: '#fde68a88' },
  '.cm-searchMatch-selected': { backgroundColor: '#fcd34d' },
  '.cm-selectionMatch': { backgroundColor: '#e0e7ff' }
})

const view = new EditorView({
  parent: document.getElementById('editor'),
  state: EditorState.create({
    doc: ytext.toString(),
    extensions: [
      keymap.of([...yUndoManagerKeymap, ...markdownKeymap, ...searchKeymap, indentWithTab, ...defaultKeymap]),
      yCollab(ytext, awareness, { undoManager }),
      highlightSpecialChars(),
      drawSelection(),
      dropCursor(),
      rectangularSelection(),
      crosshairCursor(),
      highlightActiveLine(),
      highlightSelectionMatches(),
      indentOnInput(),
      bracketMatching(),
      search({ top: true }),
      new LanguageSupport(markdownLanguage),
      syntaxHighlighting(highlight),
      EditorView.lineWrapping,
      EditorView.contentAttributes.of({ 'aria-label': `Document ${name}`, spellcheck: 'true' }),
      EditorState.readOnly.of(readOnly),
      EditorView.editable.of(!readOnly),
      placeholder(readOnly ? 'This document is empty.' : 'Start writing… everyone here sees it as you type.'),
      theme,
      EditorView.updateListener.of((update) => { if (update.docChanged) showCounts() })
    ]
  })
})

document.getElementById('undo').addEventListener('click', () => { undoManager.undo(); view.focus() })
document.getElementById('redo').addEventListener('click', () => { undoManager.redo(); view.focus() })
const undoButton = document.getElementById('undo')
const redoButton = document.getElementById('redo')
function showUndoState () {
  undoButton.disabled = readOnly || undoManager.undoStack.length === 0
  redoButton.disabled = readOnly || undoManager.redoStack.length === 0
}
for (const event of ['stack-item-added', 'stack-item-popped', 'stack-cleared']) undoManager.on(event, showUndoState)
showUndoState()

const counts = document.getElementById('counts')
function showCounts () {
  const text = view.state.doc.toString()
  const words = (text.match(/\S+/g) || []).length
  const fmt = new Intl.NumberFormat()
  counts.textContent = `${fmt.format(words)} word${words === 1 ? '' : 's'} · ${fmt.format(text.length)} character${text.length === 1 ? '' : 's'}`
}
showCounts()

// --- connection status -----------------------------------------------------
// connecting: never connected yet; connected; offline: the connection was lost
// (y-websocket keeps retrying, and everything typed meanwhile is kept and sent).

const statusEl = document.getElementById('status')
const statusLabel = statusEl.querySelector('.status-label')
const syncNote = document.getElementById('sync-note')
const STATUS = {
  connected: ['Connected', 'Your changes reach everyone as you type.'],
  connecting: ['Connecting…', 'Connecting to the server…'],
  offline: ['Offline', 'Reconnecting… Keep typing: your changes are kept and sent when the connection is back.'],
  closed: ['Disconnected', 'The server closed this document.']
}
let lost = false // a connection closed or failed since the last time we were connected
let closedFor = null // the server refused us for good (e.g. 4404: the document was deleted)

function showStatus () {
  let state = provider.wsconnected ? 'connected' : lost || !navigator.onLine ? 'offline' : 'connecting'
  if (closedFor) state = 'closed'
  statusEl.dataset.status = state
  const [label, title] = STATUS[state]
  statusLabel.textContent = closedFor?.code === 4404 ? 'Document deleted' : label
  statusEl.title = title
  if (state === 'offline') syncNote.textContent = 'Offline: changes will sync when you reconnect'
  else if (state === 'connected') syncNote.textContent = provider.synced ? 'All changes synced' : 'Syncing…'
  else syncNote.textContent = ''
}

provider.on('status', ({ status }) => {
  if (status === 'connected') {
    lost = false
    // Peers dropped our presence when the last connection closed, and they ignore
    // a state whose clock they have seen: re-set it, which bumps the clock, so we
    // reappear at once instead of at the next renewal (15 s).
    if (awareness.getLocalState() !== null) awareness.setLocalState({ ...awareness.getLocalState() })
  }
  if (status === 'disconnected') lost = true
  showStatus()
})
provider.on('connection-close', () => { lost = true; showStatus() })
provider.on('connection-error', () => { lost = true; showStatus() })
provider.on('closed', (event) => { closedFor = event; showStatus() })
provider.on('sync', () => showStatus())
window.addEventListener('offline', showStatus)
window.addEventListener('online', showStatus)
showStatus()

// --- presence --------------------------------------------------------------

const avatarsEl = document.getElementById('avatars')
const peopleEl = document.getElementById('people')
const peopleCount = document.getElementById('people-count')
const MAX_AVATARS = 5

/** Everyone whose awareness state is known, you first, then by name. */
function people () {
  const list = []
  awareness.getStates().forEach((state, clientId) => {
    if (!state || !state.user) return
    const personName = String(state.user.name || 'Anonymous').slice(0, 60)
    const color = /^#[0-9a-f]{6}$/i.test(state.user.color || '') ? state.user.color : colorFor(personName)
    list.push({ clientId, name: personName, color, me: clientId === ydoc.clientID, typing: state.cursor != null })
  })
  return list.sort((a, b) => (b.me - a.me) || a.name.localeCompare(b.name) || a.clientId - b.clientId)
}

function avatar (person, extraClass = '') {
  return h('span', {
    class: `avatar ${extraClass}`.trim(),
    style: { backgroundColor: person.color },
    title: person.me ? `${person.name} (you)` : person.name,
    'data-name': person.name
  }, initials(person.name))
}

function showPeople () {
  const everyone = people()
  const others = everyone.filter((p) => !p.me)
  const shown = others.slice(0, MAX_AVATARS)
  const hidden = others.length - shown.length
  avatarsEl.replaceChildren(...shown.map((p) => avatar(p)))
  if (hidden > 0) avatarsEl.append(h('span', { class: 'avatar more', title: `${hidden} more` }, `+${hidden}`))
  avatarsEl.hidden = others.length === 0
  peopleCount.textContent = String(everyone.length)
  peopleEl.replaceChildren(...everyone.map((p) =>
    h('li', { class: 'person', 'data-client': String(p.clientId), 'data-name': p.name },
      avatar(p, 'small'),
      h('span', { class: 'person-name' }, p.name),
      p.me ? h('span', { class: 'tag' }, 'you') : null,
      h('span', { class: `presence-dot${p.typing ? ' active' : ''}`, style: { backgroundColor: p.color }, title: p.typing ? 'In the document' : 'Viewing' })
    )
  ))
}

awareness.on('change', showPeople)
showPeople()

// --- who you are -----------------------------------------------------------

const meButton = document.getElementById('me-button')
const mePanel = document.getElementById('me-panel')
const meInput = document.getElementById('me-input')
const meColors = document.getElementById('me-colors')
let chosenColor = user.color

function showMe () {
  const meAvatar = document.getElementById('me-avatar')
  meAvatar.textContent = initials(user.name)
  meAvatar.style.backgroundColor = user.color
  document.getElementById('me-name').textContent = user.name
}

function pickColor (color) {
  chosenColor = color
  for (const swatch of meColors.children) {
    swatch.setAttribute('aria-checked', String(swatch.dataset.color === color))
  }
}

meColors.replaceChildren(...PALETTE.map((color) =>
  h('button', {
    type: 'button', class: 'swatch', role: 'radio', 'data-color': color, 'aria-label': color,
    style: { backgroundColor: color }, onclick: () => pickColor(color)
  })
))

function openPanel (open) {
  mePanel.hidden = !open
  meButton.setAttribute('aria-expanded', String(open))
  if (open) {
    meInput.value = user.name
    pickColor(user.color)
    meInput.focus()
    meInput.select()
  }
}

meButton.addEventListener('click', () => openPanel(mePanel.hidden))
document.getElementById('me-cancel').addEventListener('click', () => openPanel(false))
mePanel.addEventListener('keydown', (event) => { if (event.key === 'Escape') { openPanel(false); meButton.focus() } })
document.addEventListener('mousedown', (event) => {
  if (!mePanel.hidden && !mePanel.contains(event.target) && !meButton.contains(event.target)) openPanel(false)
})
mePanel.addEventListener('submit', (event) => {
  event.preventDefault()
  const newName = meInput.value.trim() || user.name
  user = { name: newName, color: chosenColor, colorLight: lighten(chosenColor) }
  saveUser(user)
  awareness.setLocalStateField('user', user)
  showMe()
  openPanel(false)
  view.focus()
})
showMe()

// --- sharing ---------------------------------------------------------------

const copyButton = document.getElementById('copy-link')
copyButton.addEventListener('click', async () => {
  // The link carries no token: each person brings their own.
  const link = `${location.origin}/d/${encodeURIComponent(name)}`
  try {
    await navigator.clipboard.writeText(link)
    copyButton.textContent = 'Link copied'
  } catch {
    window.prompt('Copy this link', link)
  }
  setTimeout(() => { copyButton.textContent = 'Copy link' }, 2000)
})

if (!readOnly) view.focus()

// For the console and the browser tests: the live objects of this page.
window.collab = { name, ydoc, ytext, provider, awareness, view, undoManager, text: () => ytext.toString() }
