// Shared by the pages: the access token, API calls, who you are, formatting.

let currentToken = new URLSearchParams(location.search).get('token') || null

/** The access token of this page (`?token=` in its URL), or null. */
export function getToken () {
  return currentToken
}

/**
 * Use another token from now on: it goes into the page URL (so a reload and
 * links between pages keep it) and into every later API call and socket.
 */
export function setToken (value) {
  currentToken = value || null
  const url = new URL(location.href)
  if (currentToken) url.searchParams.set('token', currentToken)
  else url.searchParams.delete('token')
  history.replaceState(history.state, '', url)
  keepTokenInLinks()
}

/** A token pasted by a person: a bare token, or a whole link that carries one. */
export function tokenFromInput (text) {
  const value = String(text || '').trim()
  if (!value) return null
  try {
    const fromLink = new URL(value, location.href).searchParams.get('token')
    if (/^[a-z]+:\/\//i.test(value) || value.startsWith('/')) return fromLink
  } catch {}
  return value.replace(/^token=/, '')
}

/**
 * The claims of a token ({doc, mode, exp}) read without verifying it, to
 * shape the page (a read-only token gets a read-only editor); the server
 * verifies every request itself.
 */
export function tokenClaims (value = currentToken) {
  try {
    const payload = value.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')
    return JSON.parse(atob(payload.padEnd(Math.ceil(payload.length / 4) * 4, '='))) || {}
  } catch {
    return {}
  }
}

/** The documents a token covers: its exact `doc`, or its `doc_pattern` glob. */
export function tokenScope (value = currentToken) {
  const claims = tokenClaims(value)
  return claims.doc ?? claims.doc_pattern ?? null
}

/**
 * Where collab is served: `/` alone, `/collab/` when an application mounts it
 * there (the server names it in each page's `<base href>`).
 */
export const basePath = document.querySelector('base[href]') ? new URL(document.baseURI).pathname : '/'

/** A path of collab's own (`/d/x`, `/api/docs`, `/ws`) under the prefix it is served at. */
export function appPath (path) {
  return path.startsWith('/') ? basePath + path.slice(1) : path
}

/** This page's path without the prefix (`/d/x` for `/collab/d/x`). */
export function pagePath () {
  const path = location.pathname
  return path.startsWith(basePath) ? `/${path.slice(basePath.length)}` : path
}

/** `path` on this page's origin with the token kept in the query, for links between pages. */
export function withToken (path, value = currentToken) {
  const url = appPath(path)
  if (!value) return url
  return `${url}${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(value)}`
}

/** Point every `a[data-keep-token]` at its path with the current token. */
export function keepTokenInLinks () {
  for (const link of document.querySelectorAll('a[data-keep-token]')) {
    if (!link.dataset.path) link.dataset.path = link.getAttribute('href')
    link.href = withToken(link.dataset.path)
  }
}

/** The editor page of a document: the name is one URL-encoded path segment (it may hold `/`). */
export function editorHref (name, value = currentToken) {
  return withToken(`/d/${encodeURIComponent(name)}`, value)
}

/** The API path of a document (its name is one URL-encoded segment). */
export function docPath (name, rest = '') {
  return `/api/docs/${encodeURIComponent(name)}${rest}`
}

/** The WebSocket base on the same host as the page: ws: behind http:, wss: behind https:. */
export function websocketBase () {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:'
  return `${scheme}//${location.host}${appPath('/ws')}`
}

/** A refused API call: the HTTP status and the server's stable error code and message. */
export class ApiError extends Error {
  constructor (status, code, message, details = {}) {
    super(message || `HTTP ${status}`)
    this.status = status
    this.code = code
    this.details = details // the rest of the JSON body (a 409's `nearest`)
  }
}

/** The server's `{"error", "message"}` of a failed response (or what can be made of it). */
async function errorOf (response) {
  const body = (await response.text().catch(() => '')).trim()
  let code = null
  let message = body
  let details = {}
  try {
    const parsed = JSON.parse(body)
    code = parsed.error || null
    message = parsed.message || parsed.error || body
    if (parsed && typeof parsed === 'object') details = parsed
  } catch {}
  return new ApiError(response.status, code, message || `${response.status} ${response.statusText}`, details)
}

/**
 * fetch() an API route with the bearer token; JSON back (or text with
 * `as: 'text'`); throws ApiError with the server's code, or a TypeError when
 * the server cannot be reached.
 */
export async function api (path, { as = 'json', ...init } = {}) {
  const headers = new Headers(init.headers || {})
  if (currentToken) headers.set('Authorization', `Bearer ${currentToken}`)
  const response = await fetch(appPath(path), { cache: 'no-store', ...init, headers })
  if (!response.ok) throw await errorOf(response)
  return as === 'text' ? response.text() : response.json()
}

/**
 * Whether this document exists and this token may open it, asked before a
 * socket is opened (a browser cannot see why an upgrade failed):
 * {kind: 'exists' | 'missing' | 'unauthorized' | 'forbidden' | 'unreachable', code, message}.
 */
export async function checkAccess (name) {
  const headers = currentToken ? { Authorization: `Bearer ${currentToken}` } : {}
  let response
  try {
    // HEAD of the binary state: no JSON rendering of the content on the server.
    response = await fetch(appPath(docPath(name, '/update')), { method: 'HEAD', headers, cache: 'no-store' })
  } catch {
    return { kind: 'unreachable', code: null, message: 'the server cannot be reached' }
  }
  if (response.ok) return { kind: 'exists', code: null, message: '' }
  if (response.status === 404) return { kind: 'missing', code: 'not_found', message: '' }
  if (response.status === 401 || response.status === 403) {
    // HEAD has no body: ask again with GET for the server's reason.
    let error = new ApiError(response.status, null, '')
    try {
      await api(docPath(name))
    } catch (err) {
      if (err instanceof ApiError) error = err
    }
    return {
      kind: response.status === 401 ? 'unauthorized' : 'forbidden',
      code: error.code,
      message: error.message
    }
  }
  return { kind: 'unreachable', code: null, message: `the server answered ${response.status}` }
}

// --- who you are -----------------------------------------------------------

export const PALETTE = [
  '#e5484d', // red
  '#f76b15', // orange
  '#d6a100', // amber
  '#30a46c', // green
  '#12a594', // teal
  '#0090ff', // blue
  '#3e63dd', // indigo
  '#8e4ec6', // violet
  '#d6409f', // pink
  '#978365' // bronze
]

const ADJECTIVES = [
  'Amber', 'Brave', 'Bright', 'Calm', 'Clever', 'Cosy', 'Curious', 'Daring', 'Eager',
  'Gentle', 'Happy', 'Jolly', 'Keen', 'Kind', 'Lively', 'Lucky', 'Merry', 'Nimble',
  'Plucky', 'Quiet', 'Quick', 'Sunny', 'Swift', 'Witty'
]
const ANIMALS = [
  'Badger', 'Beaver', 'Crane', 'Dolphin', 'Falcon', 'Finch', 'Fox', 'Hedgehog', 'Heron',
  'Koala', 'Lynx', 'Marten', 'Otter', 'Owl', 'Panda', 'Puffin', 'Quokka', 'Raven',
  'Robin', 'Seal', 'Sparrow', 'Tiger', 'Walrus', 'Wombat'
]

const USER_KEY = 'collab.user'

const pick = (items) => items[Math.floor(Math.random() * items.length)]

/** A pale tint of a `#rrggbb` colour, for remote selections. */
export function lighten (color) {
  return /^#[0-9a-f]{6}$/i.test(color) ? `${color}33` : 'rgba(48, 188, 237, 0.2)'
}

/** Your name and colour: remembered in localStorage, a random friendly one the first time. */
export function loadUser () {
  let saved = null
  try {
    saved = JSON.parse(localStorage.getItem(USER_KEY) || 'null')
  } catch {
    saved = null
  }
  const name = typeof saved?.name === 'string' && saved.name.trim() ? saved.name.trim() : null
  const color = typeof saved?.color === 'string' && /^#[0-9a-f]{6}$/i.test(saved.color) ? saved.color : null
  const user = {
    name: name || `${pick(ADJECTIVES)} ${pick(ANIMALS)}`,
    color: color || pick(PALETTE)
  }
  if (!name || !color) saveUser(user)
  return { ...user, colorLight: lighten(user.color) }
}

export function saveUser ({ name, color }) {
  try {
    localStorage.setItem(USER_KEY, JSON.stringify({ name, color }))
  } catch {
    // storage disabled (private mode): the identity lasts for this tab only
  }
}

/** A stable colour for a peer that sent none (a bot, another client). */
export function colorFor (name) {
  let hash = 0
  for (const ch of String(name)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0
  return PALETTE[hash % PALETTE.length]
}

export function initials (name) {
  const words = String(name || '?').trim().split(/\s+/).filter(Boolean)
  if (words.length === 0) return '?'
  const letters = words.length === 1 ? [...words[0]].slice(0, 2) : [[...words[0]][0], [...words[words.length - 1]][0]]
  return letters.join('').toUpperCase()
}

// --- formatting ------------------------------------------------------------

export function formatBytes (bytes) {
  if (!bytes) return '0 B'
  const units = ['B', 'KB', 'MB', 'GB']
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit += 1
  }
  return `${value >= 10 || unit === 0 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' })

/** "just now", "5 minutes ago", "yesterday", then a date. */
export function formatWhen (seconds) {
  if (seconds == null) return '—'
  const diff = seconds * 1000 - Date.now()
  const abs = Math.abs(diff)
  if (abs < 45_000) return 'just now'
  const steps = [
    ['minute', 60_000, 60],
    ['hour', 3_600_000, 24],
    ['day', 86_400_000, 7]
  ]
  for (const [unit, ms, limit] of steps) {
    if (abs < ms * limit) return relative.format(Math.round(diff / ms), unit)
  }
  return new Date(seconds * 1000).toLocaleDateString(undefined, { year: 'numeric', month: 'short', day: 'numeric' })
}

/** Create an element: h('a', { class: 'x', href }, 'text', child). */
export function h (tag, attrs = {}, ...children) {
  const el = document.createElement(tag)
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue
    if (key === 'class') el.className = value
    else if (key === 'style' && typeof value === 'object') Object.assign(el.style, value)
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value)
    else el.setAttribute(key, value === true ? '' : value)
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue
    el.append(child instanceof Node ? child : document.createTextNode(String(child)))
  }
  return el
}

const numbers = new Intl.NumberFormat()

/** A text length for people: "empty", "1 character", "12,345 characters". */
export function formatLength (chars) {
  if (chars == null) return '—'
  if (chars === 0) return 'empty'
  return `${numbers.format(chars)} character${chars === 1 ? '' : 's'}`
}

/** A file name for a document name: no path separators or characters file systems refuse. */
export function fileName (name, extension) {
  const base = String(name).replace(/[\\/:*?"<>|\x00-\x1f]+/g, '-').replace(/^[.\s-]+|[.\s]+$/g, '') || 'document'
  return `${base.slice(0, 120)}.${extension}`
}

/** Save `text` as a file through the browser's download. */
export function downloadText (filename, text, type = 'text/plain') {
  const url = URL.createObjectURL(new Blob([text], { type: `${type};charset=utf-8` }))
  const link = h('a', { href: url, download: filename, hidden: true })
  document.body.append(link)
  link.click()
  link.remove()
  setTimeout(() => URL.revokeObjectURL(url), 10_000)
}

/** Copy to the clipboard; false when the browser refuses (plain http on another host). */
export async function copyText (text) {
  try {
    await navigator.clipboard.writeText(text)
    return true
  } catch {
    const area = h('textarea', { style: { position: 'fixed', opacity: '0' } })
    area.value = text
    document.body.append(area)
    area.select()
    let ok = false
    try {
      ok = document.execCommand('copy')
    } catch {}
    area.remove()
    return ok
  }
}

/** Shown for a moment at the bottom of the page: "Link copied". */
export function toast (message, { kind = 'info', ms = 3200 } = {}) {
  let host = document.getElementById('toasts')
  if (!host) {
    host = h('div', { id: 'toasts', class: 'toasts', role: 'status', 'aria-live': 'polite' })
    document.body.append(host)
  }
  const item = h('div', { class: `toast ${kind}` }, message)
  host.append(item)
  setTimeout(() => item.remove(), ms)
}
