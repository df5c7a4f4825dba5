// The history panel: the document's editing sessions (who, when, how much),
// its named versions, a read-only preview of any point with what changed
// since highlighted, "Save version" and "Restore this version".
//
// Everything comes from the HTTP API (/api/docs/{doc}/history, /at, /diff,
// /restore, /versions) through api() in common.js, so the token and the
// <base href> prefix work as for every other call.  A restore is applied by
// the server as a forward update: the live editor shows it through the
// normal sync, and nobody's later typing is lost.
import { ApiError, api, docPath, h, toast } from './common.js'
import { explain } from './actions.js'
import { ask } from './dialog.js'

const PAGE = 50

/** Pauses that separate two sessions, as offered in the panel (ms). */
const GAPS = [
  [60_000, 'pauses over a minute'],
  [10_000, 'pauses over 10 seconds'],
  [1_000, 'pauses over a second']
]

/** States in which the server will not answer this page's API calls for this document. */
const REFUSED = new Set(['signin', 'expired', 'forbidden'])

// --- time ------------------------------------------------------------------

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' })
const clock = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' })
const clockSeconds = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit', second: '2-digit' })
const dateOnly = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', year: 'numeric' })
const full = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'medium' })

const parse = (iso) => (iso ? new Date(iso) : null)
const sameDay = (a, b) => a.toDateString() === b.toDateString()

/** "just now", "5 minutes ago", "3 hours ago", "yesterday", "12 Mar 2026". */
export function ago (date, now = new Date()) {
  if (!date || Number.isNaN(date.getTime())) return '—'
  const diff = date.getTime() - now.getTime()
  const abs = Math.abs(diff)
  // A server clock a little ahead of this one must not say "in 2 minutes".
  if (abs < 45_000 || (diff > 0 && diff < 600_000)) return 'just now'
  if (abs < 3_600_000) return relative.format(Math.round(diff / 60_000), 'minute')
  if (abs < 86_400_000) return relative.format(Math.round(diff / 3_600_000), 'hour')
  if (abs < 7 * 86_400_000) return relative.format(Math.round(diff / 86_400_000), 'day')
  return dateOnly.format(date)
}

/** "Today 11:58", "Yesterday 09:10", "12 Mar 2026, 09:10". */
function day (date, now = new Date()) {
  if (sameDay(date, now)) return 'Today'
  const yesterday = new Date(now)
  yesterday.setDate(now.getDate() - 1)
  if (sameDay(date, yesterday)) return 'Yesterday'
  return dateOnly.format(date)
}

/** A session's span for people: "Today 11:58–12:03" (seconds when it is short). */
export function span (from, to, now = new Date()) {
  if (!from || !to) return ''
  const short = to - from < 120_000
  const fmt = short ? clockSeconds : clock
  const start = `${day(from, now)} ${fmt.format(from)}`
  if (fmt.format(from) === fmt.format(to) && sameDay(from, to)) return start
  return sameDay(from, to) ? `${start}–${fmt.format(to)}` : `${start} – ${day(to, now)} ${fmt.format(to)}`
}

function timeEl (date, cls = 'history-ago') {
  return h('time', { class: cls, datetime: date ? date.toISOString() : null, title: date ? full.format(date) : null }, ago(date))
}

// --- people ----------------------------------------------------------------

/** An author as stored by the server (a principal, `restore:<who>`, `server:import`…) for people. */
export function authorLabel (author) {
  const value = String(author ?? '').trim()
  if (!value) return 'Someone'
  const restore = /^restore:(.*)$/.exec(value)
  if (restore) return `Restore${restore[1] ? ` by ${restore[1]}` : ''}`
  if (value === 'server:import') return 'Import'
  return value
}

function authorsText (authors) {
  const names = [...new Set((authors || []).map(authorLabel))]
  if (names.length === 0) return 'Someone'
  if (names.length <= 3) return names.join(', ')
  return `${names.slice(0, 2).join(', ')} and ${names.length - 2} others`
}

function sizeText (session) {
  const n = Number(session.updates) || 0
  const bytes = Number(session.bytes) || 0
  const changes = `${n} change${n === 1 ? '' : 's'}`
  return bytes ? `${changes} · ${bytes < 1024 ? `${bytes} B` : `${(bytes / 1024).toFixed(bytes < 10240 ? 1 : 0)} KB`}` : changes
}

// --- the server's answers ----------------------------------------------------

/**
 * What to tell a person about a failed history call: {title, text, retry}
 * (retry: whether "Try again" can help).  `doing` says what was tried.
 */
export function problem (err, doing) {
  if (!(err instanceof ApiError)) {
    return {
      title: `Could not ${doing}: the server cannot be reached`,
      text: 'History is kept on the server. Check your connection; this panel tries again when the editor reconnects.',
      retry: true
    }
  }
  if (err.code === 'history_thinned') {
    const nearest = err.details?.nearest
    return {
      title: 'That exact point is no longer kept',
      text: 'History this old has been thinned to hourly and then daily checkpoints, so the precision you asked for is gone. ' +
        'Pick a nearby point in the list: the points shown there can still be opened and restored.',
      retry: false,
      nearest: nearest && nearest.seq != null ? { seq: Number(nearest.seq), at: nearest.at ?? null } : null
    }
  }
  if (err.code === 'restore_in_progress') {
    return { title: 'This restore is still running', text: 'Wait a moment, then try again: it is applied once.', retry: true }
  }
  if (err.code === 'read_only' || (err.status === 403 && /read/i.test(err.message || ''))) {
    return {
      title: `Could not ${doing}`,
      text: 'Your access lets you see the history, not change the document. Ask someone with edit access, or open it with an edit link.',
      retry: false
    }
  }
  if (err.status === 401 || err.status === 403) {
    return { title: `Could not ${doing}`, text: `${explain(err)} Give a token in the bar above, then try again.`, retry: true }
  }
  if (err.status === 404) {
    return {
      title: `Could not ${doing}`,
      text: err.code === 'not_found' || !err.message
        ? 'Nothing is stored for this document yet (or that point or version no longer exists). History starts with the first change saved.'
        : err.message,
      retry: true
    }
  }
  if (err.status === 429) return { title: `Could not ${doing} yet`, text: 'Too many requests at once: wait a moment, then try again.', retry: true }
  if (err.status >= 500) {
    return { title: `The server could not ${doing}`, text: `${err.message || `It answered ${err.status}.`} Try again; if it keeps failing, tell whoever runs this server.`, retry: true }
  }
  return { title: `Could not ${doing}`, text: explain(err), retry: true }
}

/** A key that makes a retried restore apply once (the server remembers it). */
function idempotencyKey () {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID()
  const bytes = new Uint8Array(16)
  crypto.getRandomValues(bytes)
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('')
}

/** The versions of a GET /versions answer (a list, or {versions: [...]}), newest first. */
function versionList (answer) {
  const list = Array.isArray(answer) ? answer : Array.isArray(answer?.versions) ? answer.versions : []
  return [...list].sort((a, b) => (Number(b.seq) - Number(a.seq)) || String(b.at).localeCompare(String(a.at)))
}

/**
 * The text at the "from" point of a diff with what changed up to "to":
 * runs of {op: 'equal' | 'insert' | 'delete', text}.  The text "from" held is
 * the equal and deleted runs; "to" holds the equal and inserted ones.
 */
export function textsOf (ops) {
  let before = ''
  let after = ''
  for (const { op, text } of ops) {
    if (op !== 'insert') before += text
    if (op !== 'delete') after += text
  }
  return { before, after }
}

// --- the panel -----------------------------------------------------------------

/**
 * Mount the panel on the editor page: `toggle` is the header button,
 * `panel` the (empty) aside it opens, `sheet` the editor's sheet, in which
 * the preview replaces the live editor while a point is shown.
 */
export function mountHistory ({ name, conn, ydoc, toggle, panel, sheet }) {
  const state = {
    open: false,
    gap: GAPS[0][0],
    sessions: [], // newest first
    next: null, // `before` of the next page, null at the oldest
    versions: [],
    latest: null,
    oldest: null,
    loading: false,
    loaded: false,
    error: null, // loading failed: {title, text, retry, again}
    actionError: null, // a restore failed: shown until another point is picked
    selected: null, // {kind: 'session' | 'version', seq, session?, version?}
    preview: null, // {seq, at, text, ops, error}
    generation: 0 // bumps on every reload: late answers of an older one are dropped
  }
  const canWrite = () => !conn.readOnly

  // --- the static parts -----------------------------------------------------

  const closeButton = h('button', { type: 'button', class: 'icon-button', 'aria-label': 'Close history', title: 'Close (Escape)' }, closeIcon())
  const saveButton = h('button', { type: 'button', class: 'button history-save' }, 'Save version')
  const refreshButton = h('button', { type: 'button', class: 'icon-button history-refresh', 'aria-label': 'Refresh history', title: 'Refresh' }, refreshIcon())
  const gapSelect = h('select', { class: 'history-gap', 'aria-label': 'Group changes into sessions separated by' },
    GAPS.map(([ms, label]) => h('option', { value: String(ms) }, label)))
  const readOnlyNote = h('p', { class: 'history-note', hidden: true },
    'You can look through the history. Restoring and saving versions need edit access.')
  const errorBox = h('div', { class: 'history-error', role: 'alert', hidden: true })
  const versionsList = h('ul', { class: 'history-list history-versions', 'aria-label': 'Named versions' })
  const versionsEmpty = h('p', { class: 'history-empty muted' }, 'No named versions yet.')
  const sessionsList = h('ol', { class: 'history-list history-sessions', 'aria-label': 'Editing sessions, newest first' })
  const sessionsNote = h('p', { class: 'history-empty muted', 'aria-live': 'polite' })
  const moreButton = h('button', { type: 'button', class: 'button history-more', hidden: true }, 'Load older changes')

  panel.classList.add('history-panel')
  panel.setAttribute('tabindex', '-1')
  panel.replaceChildren(
    h('div', { class: 'history-head' },
      h('h2', { class: 'history-title', id: 'history-title' }, 'History'),
      refreshButton, closeButton),
    h('div', { class: 'history-tools' },
      saveButton,
      h('label', { class: 'history-gap-label' }, h('span', {}, 'Sessions split at'), gapSelect)),
    readOnlyNote,
    errorBox,
    h('section', { class: 'history-section' },
      h('h3', {}, 'Named versions'), versionsEmpty, versionsList),
    h('section', { class: 'history-section' },
      h('h3', {}, 'Changes'), sessionsNote, sessionsList, moreButton)
  )
  panel.setAttribute('aria-labelledby', 'history-title')
  toggle.setAttribute('aria-controls', panel.id)
  toggle.setAttribute('aria-expanded', 'false')

  // The preview, in the sheet where the live editor is.
  const previewTitle = h('strong', { class: 'history-preview-title' })
  const previewMeta = h('span', { class: 'history-preview-meta muted' })
  const restoreButton = h('button', { type: 'button', class: 'button primary history-restore' }, 'Restore this version')
  const restoreNote = h('span', { class: 'history-restore-note muted', hidden: true })
  const backButton = h('button', { type: 'button', class: 'button history-back' }, 'Close preview')
  const showChanges = h('input', { type: 'checkbox', checked: true, class: 'history-show-changes' })
  const summary = h('span', { class: 'history-summary', 'aria-live': 'polite' })
  const prevChange = h('button', { type: 'button', class: 'icon-button', 'aria-label': 'Previous change', title: 'Previous change' }, '‹')
  const nextChange = h('button', { type: 'button', class: 'icon-button', 'aria-label': 'Next change', title: 'Next change' }, '›')
  const previewError = h('div', { class: 'history-error', role: 'alert', hidden: true })
  const previewText = h('div', { class: 'history-text', tabindex: '0', role: 'document' })
  const preview = h('section', { id: 'history-preview', class: 'history-preview', hidden: true, 'aria-label': 'A past version (read only)' },
    h('div', { class: 'history-preview-bar' },
      h('div', { class: 'history-preview-head' }, previewTitle, previewMeta),
      h('div', { class: 'history-preview-actions' }, restoreNote, backButton, restoreButton)),
    h('div', { class: 'history-preview-changes' },
      h('label', { class: 'history-toggle' }, showChanges, ' Show changes since'),
      h('span', { class: 'history-legend' },
        h('span', { class: 'diff-delete' }, 'removed since'),
        h('span', { class: 'diff-insert' }, 'added since')),
      h('span', { class: 'history-nav' }, summary, prevChange, nextChange)),
    previewError,
    previewText)
  const editorEl = sheet.querySelector('#editor')
  ;(editorEl || sheet.lastElementChild).after(preview)

  // --- opening and closing --------------------------------------------------

  function setOpen (want) {
    if (want === state.open) return
    state.open = want
    panel.hidden = !want
    toggle.setAttribute('aria-expanded', String(want))
    document.body.classList.toggle('history-open', want)
    if (want) {
      reload() // renders at once (loading), then with the answer
      panel.focus()
    } else {
      closePreview()
      toggle.focus()
    }
  }

  toggle.addEventListener('click', () => setOpen(!state.open))
  closeButton.addEventListener('click', () => setOpen(false))
  panel.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && !event.defaultPrevented) {
      event.preventDefault()
      // First the preview, then the panel.
      if (state.selected) closePreview()
      else setOpen(false)
    }
    if (event.key === 'ArrowDown' || event.key === 'ArrowUp') moveFocus(event)
  })
  preview.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') { event.preventDefault(); leavePreview() }
  })
  // Ctrl+Alt+Shift+H opens and closes it (as in Google Docs).
  window.addEventListener('keydown', (event) => {
    if ((event.ctrlKey || event.metaKey) && event.altKey && event.shiftKey && event.code === 'KeyH') {
      event.preventDefault()
      setOpen(!state.open)
    }
  })

  /** Up and Down move between the points of the lists (from the panel itself: to the first). */
  function moveFocus (event) {
    const points = [...panel.querySelectorAll('.history-point')]
    const at = points.indexOf(document.activeElement)
    if (document.activeElement === panel && points.length) {
      event.preventDefault()
      points[0].focus()
      return
    }
    if (at < 0) return
    event.preventDefault()
    points[Math.max(0, Math.min(points.length - 1, at + (event.key === 'ArrowDown' ? 1 : -1)))].focus()
  }

  /** Close the preview and put the focus back on the point it showed. */
  function leavePreview () {
    const key = state.selected ? keyOf(state.selected) : null
    closePreview()
    const button = key && panel.querySelector(`.history-point[data-key="${key}"]`)
    if (button && !panel.hidden && button.offsetParent) button.focus()
    else if (state.open) panel.focus()
  }

  // --- loading --------------------------------------------------------------

  const historyPath = (before = null, limit = PAGE) => {
    const query = new URLSearchParams({ limit: String(limit), gap_ms: String(state.gap) })
    if (before != null) query.set('before', String(before))
    return docPath(name, `/history?${query}`)
  }

  /** The newest page and the versions, again; older pages already shown are kept. */
  async function reload () {
    const generation = ++state.generation
    state.loading = true
    render()
    try {
      const [page, versions] = await Promise.all([
        api(historyPath()),
        api(docPath(name, '/versions')).catch(() => null)
      ])
      if (generation !== state.generation) return
      merge(page)
      state.versions = versions ? versionList(versions) : versionList(page.versions)
      state.error = null
      state.loaded = true
    } catch (err) {
      if (generation !== state.generation) return
      if (err instanceof ApiError && err.status === 404 && conn.isNew && !state.loaded) {
        // A new document: nothing stored yet, which is not an error.
        state.sessions = []
        state.versions = []
        state.next = null
        state.loaded = true
        state.error = null
      } else {
        state.error = { ...problem(err, 'load the history'), again: reload }
      }
    } finally {
      if (generation === state.generation) {
        state.loading = false
        render()
      }
    }
  }

  /**
   * Take the newest page: sessions older than it that were already loaded
   * stay (the same log gives the same sessions there), so "load more"
   * survives a refresh.
   */
  function merge (page) {
    const fresh = page.sessions || []
    state.latest = page.latest_seq ?? state.latest
    state.oldest = page.oldest_seq ?? state.oldest
    if (!state.loaded || fresh.length === 0 || page.next == null) {
      state.sessions = fresh
      state.next = page.next ?? null
      return
    }
    const boundary = Math.min(...fresh.map((s) => Number(s.from_seq)))
    const older = state.sessions.filter((s) => Number(s.to_seq) < boundary)
    state.sessions = [...fresh, ...older]
    if (older.length === 0) state.next = page.next
  }

  async function loadMore () {
    if (state.next == null || state.loading) return
    const generation = state.generation
    state.loading = true
    render()
    try {
      const page = await api(historyPath(state.next))
      if (generation !== state.generation) return
      const known = new Set(state.sessions.map((s) => Number(s.from_seq)))
      state.sessions.push(...(page.sessions || []).filter((s) => !known.has(Number(s.from_seq))))
      state.next = page.next ?? null
      state.error = null
    } catch (err) {
      if (generation === state.generation) state.error = { ...problem(err, 'load older changes'), again: loadMore }
    } finally {
      if (generation === state.generation) {
        state.loading = false
        render()
      }
    }
  }

  moreButton.addEventListener('click', loadMore)
  refreshButton.addEventListener('click', reload)
  gapSelect.addEventListener('change', () => {
    state.gap = Number(gapSelect.value)
    state.loaded = false // other sessions altogether: start from the newest page
    state.sessions = []
    state.next = null
    reload()
  })

  // New changes while the panel is open: refresh the newest page, at most every 3 s.
  let refreshTimer = null
  ydoc.on('update', () => {
    if (!state.open || refreshTimer != null) return
    refreshTimer = setTimeout(() => {
      refreshTimer = null
      if (state.open && !state.loading) reload()
    }, 3000)
  })
  // Relative times age.
  setInterval(() => { if (state.open) renderLists() }, 30_000)

  // Access changed (a token pasted, the server refused a write) or the connection came back.
  let lastKind = conn.state.kind
  conn.onChange(() => {
    const kind = conn.state.kind
    const recovered = kind !== lastKind && (kind === 'connected' || (REFUSED.has(lastKind) && !REFUSED.has(kind)))
    lastKind = kind
    if (state.open && recovered && state.error) reload()
    render()
  })

  // --- rendering ------------------------------------------------------------

  const keyOf = (point) => point.kind === 'version' ? `v:${point.version.id}` : `s:${point.session.from_seq}`

  /** A point the server named (a 409's nearest): the listed session that ends there, if shown. */
  function nearestPoint ({ seq, at }) {
    const session = state.sessions.find((s) => Number(s.to_seq) === seq) ||
      { from_seq: seq, to_seq: seq, from_at: at, to_at: at, authors: [], updates: 0, bytes: 0, thinned: true }
    return { kind: 'session', seq, session }
  }

  function render () {
    const writer = canWrite()
    saveButton.hidden = !writer
    readOnlyNote.hidden = writer
    refreshButton.disabled = state.loading
    showError(errorBox, state.error || state.actionError)
    renderLists()
    renderPreviewActions()
  }

  function renderLists () {
    if (!state.open) return // rebuilt when it opens
    const focused = document.activeElement?.dataset?.key
    const now = new Date()
    const selectedKey = state.selected ? keyOf(state.selected) : null

    versionsEmpty.hidden = state.versions.length > 0 || !state.loaded
    versionsList.replaceChildren(...state.versions.map((version) => {
      const at = parse(version.at)
      const key = `v:${version.id}`
      const open = h('button', {
        type: 'button',
        class: 'history-point',
        'data-key': key,
        'data-seq': String(version.seq),
        'aria-pressed': String(key === selectedKey),
        onclick: () => select({ kind: 'version', seq: Number(version.seq), version })
      },
        h('span', { class: 'history-label' }, version.label || 'Untitled version'),
        h('span', { class: 'history-line muted' }, timeEl(at), version.created_by ? h('span', {}, `by ${authorLabel(version.created_by)}`) : null))
      const remove = canWrite()
        ? h('button', {
          type: 'button',
          class: 'icon-button history-delete',
          'aria-label': `Delete the version “${version.label}”`,
          title: 'Delete this version (the history stays)',
          onclick: () => deleteVersion(version)
        }, closeIcon())
        : null
      return h('li', { class: 'history-item version' }, open, remove)
    }))

    const sessions = state.sessions
    if (state.loading && !state.loaded) sessionsNote.textContent = 'Loading…'
    else if (state.loaded && sessions.length === 0) sessionsNote.textContent = 'No changes saved yet: history starts with the first change.'
    else sessionsNote.textContent = ''
    sessionsNote.hidden = !sessionsNote.textContent
    sessionsList.replaceChildren(...sessions.map((session, index) => {
      const from = parse(session.from_at)
      const to = parse(session.to_at)
      const key = `s:${session.from_seq}`
      const latest = index === 0 && Number(session.to_seq) >= Number(state.latest ?? session.to_seq)
      return h('li', { class: 'history-item' },
        h('button', {
          type: 'button',
          class: 'history-point',
          'data-key': key,
          'data-seq': String(session.to_seq),
          'aria-pressed': String(key === selectedKey),
          title: 'Show the document as it was after these changes',
          onclick: () => select({ kind: 'session', seq: Number(session.to_seq), session })
        },
          h('span', { class: 'history-line' },
            timeEl(to),
            latest ? h('span', { class: 'tag' }, 'latest') : null,
            h('span', { class: 'history-span muted' }, span(from, to, now))),
          session.thinned
            ? h('span', { class: 'history-authors muted' }, 'Checkpoint kept from older history')
            : [h('span', { class: 'history-authors' }, authorsText(session.authors)),
                h('span', { class: 'history-size muted' }, sizeText(session))]))
    }))
    moreButton.hidden = state.next == null || !state.loaded
    moreButton.disabled = state.loading
    moreButton.textContent = state.loading && state.loaded ? 'Loading…' : 'Load older changes'
    if (focused) panel.querySelector(`.history-point[data-key="${focused}"]`)?.focus()
  }

  function showError (box, error) {
    box.hidden = !error
    if (!error) { box.replaceChildren(); return }
    const parts = [h('p', { class: 'history-error-title' }, error.title), h('p', {}, error.text)]
    if (error.again && error.retry) parts.push(h('button', { type: 'button', class: 'button', onclick: error.again }, 'Try again'))
    if (error.nearest) {
      const at = parse(error.nearest.at)
      parts.push(h('button', {
        type: 'button',
        class: 'button history-nearest',
        onclick: () => select(nearestPoint(error.nearest))
      }, `Open the nearest point kept${at ? ` (${day(at)} ${clock.format(at)})` : ''}`))
    }
    box.replaceChildren(...parts)
  }

  // --- preview --------------------------------------------------------------

  function describe (point) {
    if (point.kind === 'version') {
      const at = parse(point.version.at)
      return {
        title: `“${point.version.label || 'Untitled version'}”`,
        meta: `${at ? full.format(at) : ''}${point.version.created_by ? ` · saved by ${authorLabel(point.version.created_by)}` : ''}`
      }
    }
    const to = parse(point.session.to_at)
    return {
      title: to ? `As of ${day(to)} ${clockSeconds.format(to)}` : `As of change ${point.seq}`,
      meta: point.session.thinned
        ? `a checkpoint kept from older history · ${ago(to)}`
        : `after changes by ${authorsText(point.session.authors)} · ${ago(to)}`
    }
  }

  async function select (point) {
    state.selected = point
    state.actionError = null
    const shown = describe(point)
    previewTitle.textContent = shown.title
    previewMeta.textContent = shown.meta
    state.preview = { seq: point.seq, loading: true }
    preview.dataset.seq = String(point.seq)
    preview.dataset.state = 'loading'
    preview.hidden = false
    document.body.classList.add('history-previewing')
    previewText.replaceChildren(h('p', { class: 'muted' }, 'Loading this version…'))
    summary.textContent = ''
    showError(previewError, null)
    render()
    const generation = state.generation
    try {
      // "Now" is the newest stored change, asked for afresh.
      const [at, now] = await Promise.all([
        api(docPath(name, `/at/${point.seq}`)),
        api(historyPath(null, 1))
      ])
      if (state.selected !== point) return
      const latest = now.latest_seq ?? state.latest ?? point.seq
      let ops = null
      let diffError = null
      if (Number(latest) !== Number(point.seq)) {
        try {
          const diff = await api(docPath(name, `/diff?${new URLSearchParams({ from: String(point.seq), to: String(latest) })}`))
          ops = diff.roots?.text ?? null
        } catch (err) {
          diffError = err
        }
      } else {
        ops = at.text ? [{ op: 'equal', text: at.text }] : []
      }
      if (state.selected !== point) return
      if (ops && at.text != null && textsOf(ops).before !== at.text) {
        // Not a diff from this point: show the text alone rather than wrong marks.
        ops = null
        diffError = new ApiError(500, null, 'the comparison does not start at this point.')
      }
      state.preview = { seq: point.seq, at, latest, ops, text: at.text }
      showPreview(state.preview)
      if (diffError) {
        const said = problem(diffError, 'compare it with now')
        showError(previewError, { title: 'The changes since cannot be marked', text: `This is the text at that point without them. (${said.title}: ${said.text})`, retry: false })
      }
      preview.dataset.state = 'shown'
    } catch (err) {
      if (state.selected !== point) return
      state.preview = { seq: point.seq, error: err }
      previewText.replaceChildren()
      showError(previewError, { ...problem(err, 'open this version'), again: () => select(point) })
      preview.dataset.state = 'error'
      if (err instanceof ApiError && err.code === 'history_thinned' && generation === state.generation) reload()
    }
    renderPreviewActions()
  }

  function showPreview ({ ops, text, seq, latest }) {
    const runs = ops && ops.length ? ops : [{ op: 'equal', text: text ?? '' }]
    const nodes = []
    let inserted = 0
    let deleted = 0
    let changes = 0
    for (const { op, text: run } of runs) {
      if (!run) continue
      if (op === 'insert') {
        inserted += run.length
        changes += 1
        nodes.push(h('del', { class: 'diff-insert', title: 'Added since: a restore takes it out' }, run))
      } else if (op === 'delete') {
        deleted += run.length
        changes += 1
        nodes.push(h('ins', { class: 'diff-delete', title: 'Removed since: a restore brings it back' }, run))
      } else {
        nodes.push(document.createTextNode(run))
      }
    }
    if (text == null && nodes.length === 0) nodes.push(h('p', { class: 'muted' }, 'The document had no text at this point.'))
    else if (nodes.length === 0) nodes.push(h('span', { class: 'muted history-blank' }, 'The document was empty at this point.'))
    previewText.replaceChildren(...nodes)
    previewText.setAttribute('aria-label', `${previewTitle.textContent} (read only)`)
    preview.dataset.changes = String(changes)
    if (Number(latest) === Number(seq)) summary.textContent = 'This is how the document is now.'
    else if (ops == null) summary.textContent = ''
    else if (changes === 0) summary.textContent = 'No change to the text since.'
    else summary.textContent = `Since then: ${inserted} character${inserted === 1 ? '' : 's'} added, ${deleted} removed.`
    prevChange.hidden = nextChange.hidden = changes === 0
    changeIndex = -1
    previewText.classList.toggle('hide-inserts', !showChanges.checked)
  }

  let changeIndex = -1
  function jump (step) {
    const marks = [...previewText.querySelectorAll(showChanges.checked ? '.diff-insert, .diff-delete' : '.diff-delete')]
    if (marks.length === 0) return
    changeIndex = (changeIndex + step + marks.length) % marks.length
    for (const mark of marks) mark.classList.remove('current')
    marks[changeIndex].classList.add('current')
    marks[changeIndex].scrollIntoView({ block: 'center', behavior: 'smooth' })
  }
  prevChange.addEventListener('click', () => jump(-1))
  nextChange.addEventListener('click', () => jump(1))
  showChanges.addEventListener('change', () => previewText.classList.toggle('hide-inserts', !showChanges.checked))

  function renderPreviewActions () {
    const shown = state.preview && !state.preview.error && !state.preview.loading && state.preview.at
    const current = shown && Number(state.preview.latest) === Number(state.preview.seq)
    restoreButton.hidden = !canWrite()
    restoreButton.disabled = !shown || current || REFUSED.has(conn.state.kind)
    restoreButton.title = current ? 'This is how the document is now' : ''
    restoreNote.hidden = canWrite()
    restoreNote.textContent = conn.readOnly ? 'View only: restoring needs edit access.' : ''
  }

  function closePreview () {
    state.selected = null
    state.actionError = null
    state.preview = null
    preview.hidden = true
    delete preview.dataset.state
    document.body.classList.remove('history-previewing')
    if (state.open) renderLists()
  }

  backButton.addEventListener('click', leavePreview)

  // --- writing --------------------------------------------------------------

  /** Authors of the sessions after `seq` (already loaded: the list is newest first). */
  function authorsSince (seq) {
    const names = new Set()
    for (const session of state.sessions) {
      if (Number(session.from_seq) <= seq) continue
      for (const author of session.authors || []) if (typeof author === 'string' && author) names.add(author)
    }
    return [...names]
  }

  async function restore () {
    const point = state.selected
    if (!point || !canWrite()) return
    const key = idempotencyKey() // the same for every try in this dialog: applied once
    const authors = authorsSince(point.seq)
    const boxes = authors.length > 1
      ? authors.map((author) => h('input', { type: 'checkbox', checked: true, value: author }))
      : []
    const shown = describe(point)
    const body = [
      h('p', {}, `The document goes back to ${point.kind === 'version' ? `the version ${shown.title}` : shown.title.replace(/^As of/, 'how it was at')}.`),
      h('p', { class: 'muted' }, 'Everyone sees it at once. Changes made after that point are undone as a new change, so nothing is lost: ' +
        'the current text stays in the history, and anything typed while this runs is kept.'),
      boxes.length
        ? h('fieldset', { class: 'history-authors-choice' },
          h('legend', {}, 'Undo the changes of'),
          boxes.map((box) => h('label', {}, box, ` ${authorLabel(box.value)}`)),
          h('span', { class: 'muted' }, 'Untick someone to keep what they changed.'))
        : null
    ]
    let thinned = null
    const done = await ask({
      title: 'Restore this version?',
      body,
      confirm: 'Restore',
      submit: async () => {
        const chosen = boxes.filter((box) => box.checked).map((box) => box.value)
        if (boxes.length && chosen.length === 0) throw new Error('Pick at least one person whose changes to undo.')
        const request = { to: point.seq }
        if (boxes.length && chosen.length < boxes.length) request.by = chosen
        try {
          state.restored = await api(docPath(name, '/restore'), {
            method: 'POST',
            headers: { 'Content-Type': 'application/json', 'Idempotency-Key': key },
            body: JSON.stringify(request)
          })
        } catch (err) {
          // Trying again cannot help: the dialog closes and the panel says what to do.
          if (err instanceof ApiError && err.code === 'history_thinned') { thinned = err; return }
          const said = problem(err, 'restore')
          throw new Error(`${said.title}. ${said.text}`)
        }
      }
    })
    if (thinned) {
      showError(previewError, problem(thinned, 'restore'))
      state.actionError = problem(thinned, 'restore')
      reload()
      restoreButton.focus()
      return
    }
    if (done !== true) return
    closePreview()
    toast(`Restored ${point.kind === 'version' ? shown.title : shown.title.replace(/^As of/, 'to')}. To undo it, restore the point before it.`)
    reload()
  }
  restoreButton.addEventListener('click', restore)

  function saveVersion () {
    if (!canWrite()) return
    const now = new Date()
    ask({
      title: 'Save a version',
      body: h('p', { class: 'muted' }, 'A name for how the document is now. Anyone who can open it sees the version in the history and can go back to it.'),
      label: 'Version name',
      value: `Version of ${dateOnly.format(now)}, ${clock.format(now)}`,
      confirm: 'Save',
      check: (value) => (value ? (value.length > 200 ? 'That name is too long (200 characters at most).' : null) : 'Give the version a name.'),
      submit: async (label) => {
        try {
          const version = await api(docPath(name, '/versions'), {
            method: 'POST',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify({ label })
          })
          state.versions = versionList([version, ...state.versions.filter((v) => v.id !== version.id)])
          renderLists()
          toast(`Saved the version “${label}”`)
        } catch (err) {
          const said = problem(err, 'save the version')
          throw new Error(`${said.title}. ${said.text}`)
        }
      }
    }).then(() => saveButton.focus())
  }
  saveButton.addEventListener('click', saveVersion)

  async function deleteVersion (version) {
    const done = await ask({
      title: 'Delete this version?',
      body: [
        h('p', {}, h('strong', {}, version.label || 'Untitled version')),
        h('p', { class: 'muted' }, 'Only the name goes: the history keeps the document as it was then, in the list of changes.')
      ],
      confirm: 'Delete',
      danger: true,
      submit: async () => {
        try {
          await api(docPath(name, `/versions/${encodeURIComponent(version.id)}`), { method: 'DELETE', as: 'text' })
        } catch (err) {
          if (!(err instanceof ApiError && err.status === 404)) {
            const said = problem(err, 'delete the version')
            throw new Error(`${said.title}. ${said.text}`)
          }
        }
      }
    })
    if (done !== true) return
    state.versions = state.versions.filter((v) => v.id !== version.id)
    if (state.selected?.kind === 'version' && state.selected.version.id === version.id) closePreview()
    renderLists()
    panel.focus()
  }

  render()
  return { open: setOpen, reload, get state () { return state } }
}

function closeIcon () {
  return svg('<path d="M5 5l10 10M15 5L5 15" stroke="currentColor" stroke-width="1.7" stroke-linecap="round"/>')
}

function refreshIcon () {
  return svg('<path d="M15.5 10a5.5 5.5 0 11-1.6-3.9M16 3.5v3.5h-3.5" fill="none" stroke="currentColor" stroke-width="1.7" stroke-linecap="round" stroke-linejoin="round"/>')
}

function svg (paths) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', 'svg')
  el.setAttribute('viewBox', '0 0 20 20')
  el.setAttribute('aria-hidden', 'true')
  el.innerHTML = paths
  return el
}
