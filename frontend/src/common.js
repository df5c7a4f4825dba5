// Shared by both pages: the access token, API calls, who you are, formatting.

/** The `?token=` of the page URL, passed on to the WebSocket and every API call. */
export const token = new URLSearchParams(location.search).get('token') || null

/**
 * The claims of the token ({doc, mode, exp}) read without verifying it, to
 * shape the page (a read-only token gets a read-only editor); the server
 * verifies every request itself.
 */
export function tokenClaims () {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')
    return JSON.parse(atob(payload.padEnd(Math.ceil(payload.length / 4) * 4, '='))) || {}
  } catch {
    return {}
  }
}

/** `path` on this page's origin with the token kept in the query, for links between pages. */
export function withToken (path) {
  return token ? `${path}?token=${encodeURIComponent(token)}` : path
}

/** The editor page of a document: the name is one URL-encoded path segment (it may hold `/`). */
export function editorHref (name) {
  return withToken(`/d/${encodeURIComponent(name)}`)
}

/** The WebSocket base on the same host as the page: ws: behind http:, wss: behind https:. */
export function websocketBase () {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:'
  return `${scheme}//${location.host}/ws`
}

/** fetch() a JSON API route with the bearer token; throws with the server's message. */
export async function api (path, init = {}) {
  const headers = new Headers(init.headers || {})
  if (token) headers.set('Authorization', `Bearer ${token}`)
  const response = await fetch(path, { ...init, headers })
  if (!response.ok) {
    const detail = (await response.text()).trim()
    throw new Error(`${response.status} ${response.statusText}${detail ? `: ${detail}` : ''}`)
  }
  return response.json()
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
