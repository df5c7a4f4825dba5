// The editor: CodeMirror 6 bound to ydoc.getText('text') by y-codemirror.next,
// synced through the stock y-websocket provider (wrapped by connection.js) to
// /ws/{doc} on this host, with this browser's copy kept in IndexedDB.
import './style.css'
import * as Y from 'yjs'
import { yCollab, yUndoManagerKeymap } from 'y-codemirror.next'
import { Compartment, EditorSelection, EditorState } from '@codemirror/state'
import {
  EditorView, keymap, drawSelection, dropCursor, highlightActiveLine,
  highlightSpecialChars, placeholder, rectangularSelection, crosshairCursor
} from '@codemirror/view'
import { defaultKeymap, indentWithTab } from '@codemirror/commands'
import { HighlightStyle, LanguageSupport, syntaxHighlighting, indentOnInput, bracketMatching } from '@codemirror/language'
// markdownLanguage alone (not markdown()): highlighting without bundling HTML/CSS/JS parsers.
import { markdownKeymap, markdownLanguage } from '@codemirror/lang-markdown'
import { highlightSelectionMatches, openSearchPanel, search, searchKeymap } from '@codemirror/search'
import { tags } from '@lezer/highlight'
import {
  PALETTE, api, appPath, colorFor, copyText, editorHref, formatBytes, getToken, h, initials, keepTokenInLinks,
  lighten, loadUser, pagePath, saveUser, setToken, toast, tokenClaims, tokenFromInput, tokenScope, withToken
} from './common.js'
import { Connection } from './connection.js'
import { openLocalCopy, storedText } from './local.js'
import { deleteDocument, downloadDocument, explain, renameDocument } from './actions.js'
import { menu, popover } from './dialog.js'
import { mountHistory } from './history.js'
import { SyncProgress } from './progress.js'

// --- which document --------------------------------------------------------

/** The document name from /d/{URL-encoded name} (a raw "/" in the rest is part of the name). */
function documentName () {
  const rest = pagePath().replace(/^\/d\//, '')
  try {
    return decodeURIComponent(rest)
  } catch {
    return rest
  }
}

const name = documentName()
document.title = `${name} · collab`
const titleButton = document.getElementById('doc-title')
titleButton.textContent = name
const writerOnly = [titleButton] // hidden for a read-only token
keepTokenInLinks()

/** A read-only token: the server refuses our edits, so do not offer to make any. */
const tokenReadOnly = () => tokenClaims().mode === 'read'

// --- sync ------------------------------------------------------------------

const ydoc = new Y.Doc()
const ytext = ydoc.getText('text')
const conn = new Connection({ name, ydoc, readOnly: tokenReadOnly() })
const provider = conn.provider
const awareness = provider.awareness
// A big document arrives in pieces: "Loading 45%", and no typing until it is all here.
const progress = new SyncProgress(provider)

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
  { tag: tags.monospace, fontFamily: 'var(--mono)', fontSize: '0.92em', color: 'var(--code)' },
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
  // Remote carets: a coloured bar; the name shows on hover and for a moment
  // after the caret moves, beside the caret on its own line (never over the
  // line above).
  '.cm-ySelectionCaret': { borderLeftWidth: '2px', borderRightWidth: '0', marginLeft: '-1px', marginRight: '-1px' },
  '.cm-ySelectionCaret::before': { content: '""', position: 'absolute', inset: '0 -5px', cursor: 'default' },
  '.cm-ySelectionCaretDot': { display: 'none' },
  '.cm-ySelectionInfo': {
    top: '0',
    left: '3px',
    padding: '0 5px',
    borderRadius: '0 4px 4px 4px',
    fontFamily: 'var(--sans)',
    fontSize: '11px',
    fontWeight: '600',
    lineHeight: '16px',
    letterSpacing: '0.01em',
    whiteSpace: 'nowrap',
    color: '#fff',
    opacity: '0',
    transition: 'opacity 0.25s ease',
    transitionDelay: '0s',
    boxShadow: '0 1px 2px rgba(15, 23, 42, 0.2)',
    zIndex: '3'
  },
  '.cm-ySelectionCaret.flip .cm-ySelectionInfo': { left: 'auto', right: '3px', borderRadius: '4px 0 4px 4px' },
  '.cm-ySelectionCaret:hover .cm-ySelectionInfo, .cm-ySelectionCaret.recent .cm-ySelectionInfo': {
    opacity: '1', transitionDelay: '0s'
  },
  // Find and replace: under the sticky toolbar, styled like the rest of the page.
  '.cm-panels': { backgroundColor: 'var(--surface)', color: 'var(--ink-1)', zIndex: '6' },
  '.cm-panels.cm-panels-top': { top: 'var(--sticky-top) !important', borderBottom: '1px solid var(--line)' },
  '.cm-panel.cm-search': {
    display: 'flex', flexWrap: 'wrap', alignItems: 'center', gap: '6px 8px', padding: '10px 14px 10px 14px',
    fontFamily: 'var(--sans)', fontSize: '13px'
  },
  '.cm-panel.cm-search br': { display: 'none' },
  '.cm-panel.cm-search input[type=checkbox]': { margin: '0 4px 0 0', accentColor: 'var(--accent)' },
  '.cm-panel.cm-search label': { display: 'inline-flex', alignItems: 'center', fontSize: '13px', color: 'var(--ink-2)', whiteSpace: 'nowrap' },
  '.cm-textfield': {
    height: '30px', padding: '0 10px', margin: '0', border: '1px solid var(--line-strong)', borderRadius: '7px',
    background: 'var(--surface)', color: 'var(--ink-1)', fontSize: '14px', fontFamily: 'var(--sans)', minWidth: '0', width: '12em'
  },
  '.cm-textfield:focus': { outline: 'none', borderColor: 'var(--accent)', boxShadow: '0 0 0 3px var(--focus-ring)' },
  '.cm-button': {
    height: '30px', padding: '0 10px', margin: '0', border: '1px solid var(--line-strong)', borderRadius: '7px',
    backgroundImage: 'none', background: 'var(--surface)', color: 'var(--ink-1)', fontSize: '13px', fontWeight: '550', cursor: 'pointer'
  },
  '.cm-button:hover': { background: 'var(--hover)' },
  '.cm-button:active': { backgroundImage: 'none' },
  '.cm-panel.cm-search [name=close]': {
    position: 'static', marginLeft: 'auto', width: '30px', height: '30px', borderRadius: '7px', fontSize: '20px',
    lineHeight: '1', color: 'var(--ink-2)', cursor: 'pointer', order: '10'
  },
  '.cm-searchMatch': { backgroundColor: 'var(--match)' },
  '.cm-searchMatch-selected': { backgroundColor: 'var(--match-strong)' },
  '.cm-selectionMatch': { backgroundColor: 'var(--selection-match)' }
})

/** Ctrl+B / Ctrl+I / Ctrl+Shift+X: wrap the selection in a Markdown marker, or unwrap it. */
function toggleMarker (marker) {
  return (target) => {
    if (!editorOpen) return false
    const { state } = target
    target.dispatch(state.changeByRange((range) => {
      const before = state.sliceDoc(range.from - marker.length, range.from)
      const after = state.sliceDoc(range.to, range.to + marker.length)
      if (before === marker && after === marker) {
        return {
          changes: [{ from: range.from - marker.length, to: range.from }, { from: range.to, to: range.to + marker.length }],
          range: EditorSelection.range(range.from - marker.length, range.to - marker.length)
        }
      }
      return {
        changes: [{ from: range.from, insert: marker }, { from: range.to, insert: marker }],
        range: EditorSelection.range(range.from + marker.length, range.to + marker.length)
      }
    }), { userEvent: 'input' })
    return true
  }
}
const markdownShortcuts = [
  { key: 'Mod-b', run: toggleMarker('**') },
  { key: 'Mod-i', run: toggleMarker('*') },
  { key: 'Mod-Shift-x', run: toggleMarker('~~') },
  { key: 'Mod-e', run: toggleMarker('`') }
]

/** A paste bigger than the server takes in one message is stopped before it is made. */
const pasteGuard = EditorState.transactionFilter.of((tr) => {
  const limit = conn.maxMessage
  if (!limit || !tr.docChanged || !(tr.isUserEvent('input') || tr.isUserEvent('paste') || tr.isUserEvent('drop'))) return tr
  let chars = 0
  tr.changes.iterChanges((_fromA, _toA, _fromB, _toB, inserted) => { chars += inserted.length })
  if (chars * 3 < limit * 0.9) return tr
  let bytes = 0
  const encoder = new TextEncoder()
  tr.changes.iterChanges((_fromA, _toA, _fromB, _toB, inserted) => { bytes += encoder.encode(inserted.toString()).length })
  if (bytes < limit * 0.9) return tr
  toast(`That is too large to add at once (${formatBytes(bytes)}; this server takes up to ${formatBytes(limit)} in one change). Add it in smaller parts.`, { kind: 'error', ms: 6000 })
  return []
})

const editable = new Compartment()
const lockFor = (open) => [EditorState.readOnly.of(!open), EditorView.editable.of(open)]
const placeholderText = new Compartment()
const placeholderFor = (open) => placeholder(open ? 'Start writing… everyone here sees it as you type.' : 'This document is empty.')
let editorOpen = !conn.readOnly

const view = new EditorView({
  parent: document.getElementById('editor'),
  state: EditorState.create({
    doc: ytext.toString(),
    extensions: [
      keymap.of([...yUndoManagerKeymap, ...markdownShortcuts, ...markdownKeymap, ...searchKeymap, indentWithTab, ...defaultKeymap]),
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
      editable.of(lockFor(editorOpen)),
      placeholderText.of(placeholderFor(editorOpen)),
      pasteGuard,
      theme,
      EditorView.updateListener.of((update) => { if (update.docChanged) scheduleCounts() })
    ]
  })
})

const undoButton = document.getElementById('undo')
const redoButton = document.getElementById('redo')
undoButton.addEventListener('click', () => { undoManager.undo(); view.focus() })
redoButton.addEventListener('click', () => { undoManager.redo(); view.focus() })
document.getElementById('find').addEventListener('click', () => openSearchPanel(view))
function showUndoState () {
  undoButton.disabled = !editorOpen || undoManager.undoStack.length === 0
  redoButton.disabled = !editorOpen || undoManager.redoStack.length === 0
}
for (const event of ['stack-item-added', 'stack-item-popped', 'stack-cleared']) undoManager.on(event, showUndoState)

const counts = document.getElementById('counts')
const numbers = new Intl.NumberFormat()
let countsTimer = null
/** Words and characters, counted once typing pauses (a long document costs milliseconds per count). */
function scheduleCounts () {
  if (countsTimer == null) countsTimer = setTimeout(() => { countsTimer = null; showCounts() }, 150)
}
function showCounts () {
  const text = view.state.doc.toString()
  const words = (text.match(/\S+/g) || []).length
  counts.textContent = `${numbers.format(words)} word${words === 1 ? '' : 's'} · ${numbers.format(text.length)} character${text.length === 1 ? '' : 's'}`
}
showCounts()

// --- connection state --------------------------------------------------------

const statusEl = document.getElementById('status')
const statusLabel = statusEl.querySelector('.status-label')
const syncNote = document.getElementById('sync-note')
const banner = document.getElementById('banner')
const readOnlyBadge = document.getElementById('read-only')
const shareButton = document.getElementById('share-button')
let local = null // this browser's copy, once opened
let leaving = false // navigating away on purpose (after a rename or delete)
let newDismissed = false

const LABELS = {
  connecting: 'Connecting…',
  connected: 'Connected',
  offline: 'Offline',
  busy: 'Paused',
  signin: 'Token needed',
  expired: 'Access expired',
  forbidden: 'No access',
  'too-big': 'Not saved',
  'doc-full': 'Not saved',
  refused: 'Disconnected',
  broken: 'Unavailable',
  denied: 'View only',
  gone: 'Not on server'
}

function downloadCopy () {
  downloadDocument(name, 'md', ytext.toString())
}

function tokenForm (submitLabel) {
  const input = h('input', {
    type: 'text', class: 'token-input', placeholder: 'Paste a token or a link', 'aria-label': 'Access token or link',
    autocomplete: 'off', spellcheck: 'false'
  })
  const form = h('form', { class: 'token-form' }, input, h('button', { type: 'submit', class: 'button primary' }, submitLabel))
  form.addEventListener('submit', (event) => {
    event.preventDefault()
    const token = tokenFromInput(input.value)
    if (!token) { input.focus(); return }
    setToken(token)
    applyAccess()
    conn.retryWith(tokenReadOnly())
  })
  return form
}

/** {tone, title, text, actions, extra} for the banner, or null. */
function bannerFor (state) {
  const all = h('a', { class: 'button', href: withToken('/') }, 'All documents')
  const download = h('button', { type: 'button', class: 'button', onclick: downloadCopy }, 'Download a copy')
  switch (state.kind) {
    case 'busy': {
      const seconds = Math.max(0, Math.ceil((state.until - Date.now()) / 1000))
      return {
        tone: 'warn',
        title: state.code === 4429 ? 'Sending too fast: paused for a moment' : 'The server is busy',
        text: `Your changes are kept in this browser and sent when the connection resumes${seconds ? ` in ${seconds} s` : ''}.`,
        actions: [h('button', { type: 'button', class: 'button', onclick: () => conn.connect() }, 'Try now')]
      }
    }
    case 'signin':
      return {
        tone: 'bad',
        title: 'This server needs an access token',
        text: state.hasToken
          ? `The token in this link is not valid here (${state.reason || 'refused'}). Paste the token or link you were given.`
          : 'Paste the token or the link you were given to open this document.',
        extra: tokenForm('Open')
      }
    case 'expired':
      return {
        tone: 'bad',
        title: 'Your access has expired',
        text: 'Ask whoever shared this document for a new link and paste it here. ' +
          (conn.unsaved ? 'Your unsaved changes are kept in this browser and sent once you are back in.' : ''),
        extra: tokenForm('Continue')
      }
    case 'forbidden': {
      const scope = tokenScope()
      return {
        tone: 'bad',
        title: 'You do not have access to this document',
        text: `${scope ? `Your access covers “${scope}”, not this document. ` : ''}Ask its owner for a link, or paste another token.`,
        extra: tokenForm('Open'),
        actions: [all]
      }
    }
    case 'too-big':
      if (state.suspected) {
        return {
          tone: 'bad',
          title: 'Your last change did not get through',
          text: `The connection dropped twice while sending it${state.size ? ` (about ${formatBytes(state.size)})` : ''}: ` +
            'it may be more than this server accepts at once. Nothing typed since is saved. Try again, or remove it to go on editing.',
          actions: [
            h('button', { type: 'button', class: 'button primary', onclick: () => conn.retry() }, 'Try again'),
            h('button', { type: 'button', class: 'button', onclick: () => conn.dropUnsaved() }, 'Remove it and reconnect'),
            download
          ]
        }
      }
      return {
        tone: 'bad',
        title: 'That change is too large to save',
        text: `Your last change${state.size ? ` (about ${formatBytes(state.size)})` : ''} is more than this server accepts at once` +
          `${state.limit ? ` (${formatBytes(state.limit)})` : ''}. It was not saved, and nothing typed after it would be. ` +
          'Remove it to go on editing; add long texts in smaller parts.',
        actions: [h('button', { type: 'button', class: 'button primary', onclick: () => conn.dropUnsaved() }, 'Remove it and reconnect'), download]
      }
    case 'doc-full':
      return {
        tone: 'bad',
        title: 'This document is full',
        text: 'The server refused your last change: the document would grow past the size this server allows. ' +
          'It was not saved. Remove it to go on editing, or move some text to a new document.',
        actions: [h('button', { type: 'button', class: 'button primary', onclick: () => conn.dropUnsaved() }, 'Remove it and reconnect'), download]
      }
    case 'removed': {
      const lost = conn.unsaved ? ' Your last changes did not reach the server: download them if you need them.' : ''
      if (state.renamed) {
        return {
          tone: 'info',
          title: state.to ? `This document was renamed to “${state.to}”` : 'This document was renamed',
          text: `It is no longer under this name, so nothing more can be saved here.${lost}`,
          actions: [
            state.to ? h('a', { class: 'button primary', href: editorHref(state.to) }, `Open “${state.to}”`) : all,
            download
          ]
        }
      }
      return {
        tone: 'bad',
        title: 'This document was deleted',
        text: `It was removed from the server while you had it open, so nothing more can be saved here.${lost}`,
        actions: [all, download]
      }
    }
    case 'refused':
      return {
        tone: 'bad',
        title: 'The server refused data from this page',
        text: `${state.reason ? `“${state.reason}”. ` : ''}Reload the page to start again (download your text first if unsure).`,
        actions: [h('button', { type: 'button', class: 'button primary', onclick: () => location.reload() }, 'Reload'), download]
      }
    case 'broken':
      return {
        tone: 'bad',
        title: 'This document cannot be opened',
        text: `The server could not read it${state.reason ? ` (${state.reason})` : ''}. Try again later, or tell whoever runs the server.`,
        actions: [h('button', { type: 'button', class: 'button', onclick: () => conn.connect() }, 'Try again'), all]
      }
    case 'denied':
      return {
        tone: 'warn',
        title: 'You can only view this document',
        text: 'This tab holds changes the server did not accept (made offline or with other access). They are not saved.',
        actions: [
          h('button', { type: 'button', class: 'button', onclick: downloadCopy }, 'Download my version'),
          h('button', { type: 'button', class: 'button', onclick: discardLocal }, 'Discard them')
        ]
      }
    case 'gone':
      return {
        tone: 'warn',
        title: 'This document is not on the server',
        text: 'It may have been deleted or renamed. This browser still has the copy from your last visit.',
        actions: [
          h('button', { type: 'button', class: 'button primary', onclick: () => conn.restore() }, 'Restore it on the server'),
          download,
          h('button', { type: 'button', class: 'button', onclick: discardLocal }, 'Discard the copy')
        ]
      }
  }
  if (conn.isNew && !newDismissed && (state.kind === 'connecting' || state.kind === 'connected')) {
    return {
      tone: 'info',
      title: 'New document',
      text: `There was no document named “${name}” on the server: it is created as you type.`,
      dismiss: () => { newDismissed = true; render() }
    }
  }
  return null
}

function discardLocal () {
  leaving = true
  local?.clear()
  setTimeout(() => location.reload(), 200)
}

let shownBanner = null
function showBanner (content) {
  const key = content && JSON.stringify([content.tone, content.title, content.text])
  if (key === shownBanner) return
  shownBanner = key
  if (!content) { banner.hidden = true; banner.replaceChildren(); return }
  banner.dataset.tone = content.tone
  banner.replaceChildren(...[
    h('div', { class: 'banner-text' },
      h('strong', { class: 'banner-title' }, content.title),
      h('span', {}, ` ${content.text}`)),
    content.extra || null,
    content.actions ? h('div', { class: 'banner-actions' }, ...content.actions) : null,
    content.dismiss
      ? h('button', { type: 'button', class: 'icon-button banner-close', 'aria-label': 'Dismiss', onclick: content.dismiss }, '×')
      : null
  ].filter(Boolean))
  banner.hidden = false
  const field = banner.querySelector('input')
  if (field && document.activeElement === document.body) field.focus()
}

function render () {
  if (leaving) return
  const state = conn.state
  let kind = state.kind
  if (kind === 'connected' && !provider.wsconnected) kind = 'offline'
  statusEl.dataset.status = kind
  statusEl.dataset.transport = conn.transport || '' // websocket, sse or poll (clients/collab-transport)
  statusLabel.textContent = kind === 'removed' ? (state.renamed ? 'Renamed' : 'Deleted') : LABELS[kind]
  if (kind === 'connected' && conn.transport && conn.transport !== 'websocket') statusLabel.textContent += ' · HTTP'
  if (kind === 'connected' && progress.loading) statusLabel.textContent = `Loading ${progress.percent}%`
  statusEl.title = syncNote.textContent = noteFor(kind)
  showBanner(bannerFor(state))
  const open = conn.editable && !progress.loading
  if (open !== editorOpen) {
    editorOpen = open
    view.dispatch({ effects: [editable.reconfigure(lockFor(open)), placeholderText.reconfigure(placeholderFor(open))] })
  }
  readOnlyBadge.hidden = !conn.readOnly
  document.body.dataset.state = kind
  // A tab in the background says when its changes are not on the server.
  document.title = `${conn.unsaved && kind !== 'connected' ? '• ' : ''}${name} · collab`
  // Nothing to share without access to the document itself.
  shareButton.disabled = ['signin', 'expired', 'forbidden', 'gone', 'removed'].includes(kind)
  showUndoState()
  for (const button of writerOnly) button.hidden = conn.readOnly
}

function noteFor (kind) {
  const kept = local && !local.available ? 'kept in this tab only: keep it open' : 'kept in this browser'
  switch (kind) {
    case 'connecting': return 'Connecting to the server…'
    case 'connected':
      if (conn.readOnly) return provider.synced ? 'Up to date' : 'Loading…'
      if (!provider.synced) return 'Syncing…'
      return conn.unsaved ? 'Saving…' : 'All changes saved'
    case 'offline':
      return conn.state.unreachable === false && navigator.onLine
        ? `Reconnecting… your changes are ${kept}`
        : `Offline: your changes are ${kept} and sent when you reconnect`
    case 'busy': return `Paused: your changes are ${kept}`
    case 'too-big': case 'doc-full': return 'Your last change was not saved'
    default: return conn.unsaved ? 'Changes not saved' : ''
  }
}

// A countdown while backing off.
setInterval(() => { if (conn.state.kind === 'busy') { shownBanner = null; render() } }, 1000)

conn.onChange(render)
progress.onChange(render)
provider.on('status', ({ status }) => {
  if (status === 'connected') {
    // Peers dropped our presence when the last connection closed, and they ignore
    // a state whose clock they have seen: re-set it, which bumps the clock, so we
    // reappear at once instead of at the next renewal (15 s).
    if (awareness.getLocalState() !== null) awareness.setLocalState({ ...awareness.getLocalState() })
  }
  render()
})
ydoc.on('update', (_update, origin) => {
  // The first thing typed into a new document makes it exist: the note has said so.
  if (origin !== provider && conn.isNew && !newDismissed && conn.state.kind === 'connected') {
    newDismissed = true
    render()
  }
})

// Ctrl+S out of habit: there is nothing to save by hand, say where things stand.
window.addEventListener('keydown', (event) => {
  if ((event.ctrlKey || event.metaKey) && !event.altKey && event.key.toLowerCase() === 's') {
    event.preventDefault()
    toast(conn.unsaved || !conn.connected ? syncNote.textContent || 'Not connected' : 'Everything is saved as you type')
  }
})

// Changes the server has not confirmed: say so before the page goes.
window.addEventListener('beforeunload', (event) => {
  if (leaving || !conn.unsaved) return
  event.preventDefault()
  event.returnValue = ''
})

function applyAccess () {
  conn.readOnly = tokenReadOnly()
  keepTokenInLinks()
  shareCache = null
}

// --- presence --------------------------------------------------------------

const avatarsEl = document.getElementById('avatars')
const peopleLists = document.querySelectorAll('.people-list')
const peopleCounts = document.querySelectorAll('.people-count')
const MAX_AVATARS = 4

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
  avatarsEl.classList.toggle('alone', others.length === 0)
  if (others.length === 0) avatarsEl.append(h('span', { class: 'avatar more', title: 'Only you' }, '1'))
  avatarsEl.setAttribute('aria-label', `Who is here: ${everyone.length} ${everyone.length === 1 ? 'person' : 'people'}`)
  for (const badge of peopleCounts) badge.textContent = String(everyone.length)
  for (const list of peopleLists) {
    list.replaceChildren(...everyone.map((p) =>
      h('li', {
        class: `person${!p.me && p.typing ? ' can-jump' : ''}`,
        'data-client': String(p.clientId),
        'data-name': p.name,
        title: !p.me && p.typing ? `Go to ${p.name}'s cursor` : null,
        onclick: !p.me && p.typing ? () => jumpTo(p.clientId) : null
      },
        avatar(p, 'small'),
        h('span', { class: 'person-name' }, p.name),
        p.me ? h('span', { class: 'tag' }, 'you') : null,
        h('span', { class: `presence-dot${p.typing ? ' active' : ''}`, style: { backgroundColor: p.color }, title: p.typing ? 'In the document' : 'Viewing' })
      )
    ))
  }
}

/** Scroll to where someone's cursor is, as a click on them in Google Docs does. */
function jumpTo (clientId) {
  const head = awareness.getStates().get(clientId)?.cursor?.head
  if (!head) return
  const position = Y.createAbsolutePositionFromRelativePosition(Y.createRelativePositionFromJSON(head), ydoc)
  if (!position || position.type !== ytext) return
  view.dispatch({ effects: EditorView.scrollIntoView(Math.min(position.index, view.state.doc.length), { y: 'center' }) })
  peoplePopover.open(false)
}

awareness.on('change', showPeople)
showPeople()
const peoplePopover = popover(avatarsEl, document.getElementById('people-panel'))

// Remote name tags: shown for a moment after that person's caret moves.
const caretMoves = new Map()
awareness.on('change', ({ updated, added }) => {
  const now = Date.now()
  for (const clientId of [...added, ...updated]) {
    if (clientId === ydoc.clientID) continue
    const state = awareness.getStates().get(clientId)
    const key = JSON.stringify(state?.cursor ?? null)
    if (caretMoves.get(clientId)?.key === key) continue
    caretMoves.set(clientId, { key, at: now, name: String(state?.user?.name || '') })
  }
  requestAnimationFrame(markRecentCarets)
})
function markRecentCarets () {
  const now = Date.now()
  const recent = new Set([...caretMoves.values()].filter((m) => now - m.at < 1500).map((m) => m.name))
  const right = view.dom.getBoundingClientRect().right
  for (const caret of view.dom.querySelectorAll('.cm-ySelectionCaret')) {
    const info = caret.querySelector('.cm-ySelectionInfo')
    caret.classList.toggle('recent', recent.has(info?.textContent || ''))
    // Near the right edge the tag goes to the caret's left, inside the page.
    if (info) caret.classList.toggle('flip', caret.getBoundingClientRect().left + info.offsetWidth + 8 > right)
  }
  if (recent.size) setTimeout(markRecentCarets, 400)
}

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

const mePopover = popover(meButton, mePanel, {
  onOpen: () => {
    meInput.value = user.name
    pickColor(user.color)
    meInput.focus()
    meInput.select()
  }
})
document.getElementById('me-cancel').addEventListener('click', () => mePopover.open(false))
mePanel.addEventListener('submit', (event) => {
  event.preventDefault()
  const newName = meInput.value.trim() || user.name
  user = { name: newName, color: chosenColor, colorLight: lighten(chosenColor) }
  saveUser(user)
  awareness.setLocalStateField('user', user)
  showMe()
  mePopover.open(false)
  if (editorOpen) view.focus()
})
showMe()

// --- sharing ---------------------------------------------------------------

const shareDialog = document.getElementById('share-dialog')
const shareBody = document.getElementById('share-body')
let shareCache = null

/** What this page may hand out: {open} (no auth), {mode, edit, view, expires, scope}, or {error}. */
async function shareLinks () {
  const mint = (mode) => api('/api/tokens', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ mode })
  })
  try {
    const view = await mint('read')
    const claims = tokenClaims()
    const edit = claims.mode === 'write' ? await mint('write') : null
    return { mode: claims.mode || 'read', view, edit, scope: view.doc_pattern ?? view.doc ?? tokenScope() }
  } catch (err) {
    if (err.code === 'auth_disabled' || (err.status === 404 && !getToken())) return { open: true }
    return { error: explain(err) }
  }
}

function linkRow (label, hint, link, testId) {
  const field = h('input', { type: 'text', class: 'link-field', readonly: true, value: link, 'aria-label': `${label} link`, 'data-link': testId })
  const copy = h('button', { type: 'button', class: 'button', 'data-copy': testId }, 'Copy')
  copy.addEventListener('click', async () => {
    if (await copyText(link)) {
      copy.textContent = 'Copied'
      toast('Link copied')
    } else {
      field.focus()
      field.select()
      toast('Press Ctrl+C to copy the selected link')
    }
    setTimeout(() => { copy.textContent = 'Copy' }, 2000)
  })
  field.addEventListener('focus', () => field.select())
  return h('div', { class: 'share-row' },
    h('div', { class: 'share-row-head' }, h('strong', {}, label), h('span', { class: 'muted' }, hint)),
    h('div', { class: 'share-row-link' }, field, copy))
}

function whenExpires (seconds) {
  if (!seconds) return ''
  return new Date(seconds * 1000).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' })
}

async function openShare () {
  shareDialog.showModal()
  const base = location.origin + appPath(`/d/${encodeURIComponent(name)}`)
  if (!shareCache) {
    shareBody.replaceChildren(h('p', { class: 'muted' }, 'Preparing links…'))
    shareCache = await shareLinks()
  }
  const links = shareCache
  const rows = []
  if (links.open) {
    rows.push(h('p', {}, 'This server has no sign-in: anyone who can reach it can open and edit this document with its link.'))
    rows.push(linkRow('Link', 'can edit', base, 'open'))
  } else if (links.error) {
    rows.push(h('p', { class: 'notice error' }, `No share links can be made: ${links.error}`))
    rows.push(linkRow('Link without access', 'for people who have their own token', base, 'bare'))
  } else {
    if (links.edit) rows.push(linkRow('Can edit', 'read and change the text', location.origin + editorHref(name, links.edit.token), 'edit'))
    else rows.push(h('p', {}, 'You can view this document. Only someone with edit access can share an edit link.'))
    rows.push(linkRow('Can view', 'read only, no changes', location.origin + editorHref(name, links.view.token), 'view'))
    const notes = []
    const expires = whenExpires(links.view.expires_at)
    if (expires) notes.push(`These links work until ${expires}.`)
    if (links.scope && links.scope !== name) notes.push(`They also open every other document your access covers (“${links.scope}”).`)
    notes.push('Anyone you send a link to gets that access.')
    rows.push(h('p', { class: 'muted share-note' }, notes.join(' ')))
    rows.push(linkRow('Link without access', 'for people who have their own token', base, 'bare'))
  }
  shareBody.replaceChildren(...rows)
}

shareButton.addEventListener('click', openShare)
document.getElementById('share-close').addEventListener('click', () => shareDialog.close())
shareDialog.addEventListener('click', (event) => { if (event.target === shareDialog) shareDialog.close() })

// --- document actions ----------------------------------------------------------

async function rename () {
  if (conn.readOnly) return
  const to = await renameDocument(name, { before: () => { leaving = true }, failed: () => { leaving = false } })
  if (!to) return
  local?.clear()
  location.assign(editorHref(to))
}

async function remove () {
  const deleted = await deleteDocument(name, { before: () => { leaving = true }, failed: () => { leaving = false } })
  if (!deleted) return
  local?.clear()
  location.assign(withToken('/'))
}

titleButton.addEventListener('click', rename)
menu(document.getElementById('doc-menu'), () => [
  ...(conn.readOnly ? [] : [{ label: 'Rename…', run: rename }]),
  { label: 'Download as Markdown (.md)', run: () => downloadDocument(name, 'md', ytext.toString()) },
  { label: 'Download as plain text (.txt)', run: () => downloadDocument(name, 'txt', ytext.toString()) },
  { label: 'Find and replace', run: () => openSearchPanel(view) },
  ...(conn.readOnly ? [] : [null, { label: 'Delete…', run: remove, danger: true }])
])

// --- history -----------------------------------------------------------------

mountHistory({
  name, conn, ydoc,
  toggle: document.getElementById('history-button'),
  panel: document.getElementById('history-panel'),
  sheet: document.querySelector('.sheet')
})

// --- start -------------------------------------------------------------------

render()
openLocalCopy(name, ydoc).then((copy) => {
  local = copy
  conn.local = copy
  render()
  conn.start()
})
if (editorOpen) view.focus()

// For the console and the browser tests: the live objects of this page.
window.collab = {
  name, ydoc, ytext, provider, awareness, view, undoManager, conn, text: () => ytext.toString(), get local () { return local },
  storedText: () => storedText(name, Y)
}
