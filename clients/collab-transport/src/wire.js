// The HTTP transport's wire format (docs/transports.md, the contract shared
// with the server): URL mapping, length-prefixed frame batches, base64 and
// the Server-Sent Events parser.  No I/O here, so each piece is tested alone.

/**
 * The HTTP URL of one endpoint for a WebSocket URL: `ws`->`http`,
 * `wss`->`https`, and the LAST `/ws/` path segment replaced by `/<kind>/`
 * (document names may contain `/`).  `params` are added to the query.
 *
 * @param {string} wsUrl
 * @param {'sse'|'poll'|'send'} kind
 * @param {Record<string, string|number>} [params]
 */
export function endpointUrl (wsUrl, kind, params = {}) {
  const url = new URL(wsUrl)
  const { prefix, rest } = splitPath(url)
  url.protocol = httpScheme(url.protocol)
  url.pathname = `${prefix}/${kind}/${rest}`
  for (const [key, value] of Object.entries(params)) url.searchParams.set(key, String(value))
  return url.toString()
}

/**
 * Where collab is mounted, as an HTTP URL ending in `/`: the part of the
 * WebSocket URL before its last `/ws/`.  The probe lives there, and the
 * chosen tier is remembered per such base.
 *
 * @param {string} wsUrl
 */
export function appBase (wsUrl) {
  const url = new URL(wsUrl)
  const { prefix } = splitPath(url)
  return `${httpScheme(url.protocol)}//${url.host}${prefix}/`
}

/** @param {string} wsUrl */
export function probeUrl (wsUrl) {
  return `${appBase(wsUrl)}transport/probe`
}

/** @param {URL} url */
function splitPath (url) {
  const path = url.pathname
  const at = path.lastIndexOf('/ws/')
  if (at < 0) throw new TypeError(`not a collab WebSocket URL (no /ws/ in its path): ${url}`)
  return { prefix: path.slice(0, at), rest: path.slice(at + 4) }
}

/** @param {string} protocol */
function httpScheme (protocol) {
  if (protocol === 'ws:' || protocol === 'http:') return 'http:'
  if (protocol === 'wss:' || protocol === 'https:') return 'https:'
  throw new TypeError(`unsupported scheme ${protocol}`)
}

// --- frame batches: each frame preceded by its length as a lib0 varuint ------

/** @param {number} n */
function varuintSize (n) {
  let size = 1
  while (n > 0x7f) {
    n = Math.floor(n / 128)
    size += 1
  }
  return size
}

/**
 * One POST body (or response) from frames.
 *
 * @param {Uint8Array[]} frames
 * @returns {Uint8Array}
 */
export function encodeFrames (frames) {
  let total = 0
  for (const frame of frames) total += varuintSize(frame.length) + frame.length
  const out = new Uint8Array(total)
  let pos = 0
  for (const frame of frames) {
    let n = frame.length
    while (n > 0x7f) {
      out[pos++] = 0x80 | (n & 0x7f)
      n = Math.floor(n / 128)
    }
    out[pos++] = n
    out.set(frame, pos)
    pos += frame.length
  }
  return out
}

/**
 * The frames of a POST response; a truncated batch throws.
 *
 * @param {Uint8Array} bytes
 * @returns {Uint8Array[]}
 */
export function decodeFrames (bytes) {
  const frames = []
  let pos = 0
  while (pos < bytes.length) {
    let length = 0
    let scale = 1
    for (;;) {
      if (pos >= bytes.length) throw new RangeError('truncated frame length')
      const byte = bytes[pos++]
      length += (byte & 0x7f) * scale
      scale *= 128
      if (byte < 0x80) break
      if (scale > 2 ** 53) throw new RangeError('frame length overflows')
    }
    if (pos + length > bytes.length) throw new RangeError('truncated frame')
    frames.push(bytes.slice(pos, pos + length))
    pos += length
  }
  return frames
}

// --- base64 (frames in SSE events and poll answers) --------------------------

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
const LOOKUP = new Uint8Array(128).fill(255)
for (let i = 0; i < ALPHABET.length; i++) LOOKUP[ALPHABET.charCodeAt(i)] = i
LOOKUP['-'.charCodeAt(0)] = 62 // the URL-safe alphabet too
LOOKUP['_'.charCodeAt(0)] = 63

/**
 * Decode base64 (padded or not) into bytes, without atob's string detour:
 * an initial sync can be megabytes.
 *
 * @param {string} text
 * @returns {Uint8Array}
 */
export function fromBase64 (text) {
  let end = text.length
  while (end > 0 && text.charCodeAt(end - 1) === 61) end-- // '='
  const out = new Uint8Array(Math.floor((end * 3) / 4))
  let bits = 0
  let value = 0
  let pos = 0
  for (let i = 0; i < end; i++) {
    const code = text.charCodeAt(i)
    const digit = code < 128 ? LOOKUP[code] : 255
    if (digit === 255) throw new SyntaxError(`invalid base64 character at ${i}`)
    value = (value << 6) | digit
    bits += 6
    if (bits >= 8) {
      bits -= 8
      out[pos++] = (value >> bits) & 0xff
    }
  }
  return pos === out.length ? out : out.slice(0, pos)
}

/**
 * @param {Uint8Array} bytes
 * @returns {string}
 */
export function toBase64 (bytes) {
  let out = ''
  let i = 0
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2]
    out += ALPHABET[n >> 18] + ALPHABET[(n >> 12) & 63] + ALPHABET[(n >> 6) & 63] + ALPHABET[n & 63]
  }
  const left = bytes.length - i
  if (left === 1) {
    const n = bytes[i] << 16
    out += ALPHABET[n >> 18] + ALPHABET[(n >> 12) & 63] + '=='
  } else if (left === 2) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8)
    out += ALPHABET[n >> 18] + ALPHABET[(n >> 12) & 63] + ALPHABET[(n >> 6) & 63] + '='
  }
  return out
}

// --- Server-Sent Events --------------------------------------------------------

/**
 * @typedef {{ event: string, data: string, id: string | null }} SseEvent
 */

/**
 * An incremental `text/event-stream` parser (the WHATWG rules: `\n`, `\r\n`
 * or `\r` line ends, `:` comments, multi-line `data`, the `id` carried over).
 * Feed it decoded text in chunks cut anywhere; it returns the complete events.
 */
export class SseParser {
  constructor () {
    this.buffer = ''
    this.event = ''
    this.data = []
    this.id = null // the last event id, kept across events as the spec says
    this.pendingCR = false
  }

  /**
   * @param {string} chunk
   * @returns {SseEvent[]}
   */
  feed (chunk) {
    if (this.pendingCR && chunk.startsWith('\n')) chunk = chunk.slice(1)
    this.pendingCR = false
    this.buffer += chunk
    const events = []
    let start = 0
    for (let i = 0; i < this.buffer.length; i++) {
      const c = this.buffer.charCodeAt(i)
      if (c !== 10 && c !== 13) continue
      const line = this.buffer.slice(start, i)
      if (c === 13) {
        if (i + 1 === this.buffer.length) this.pendingCR = true
        else if (this.buffer.charCodeAt(i + 1) === 10) i++
      }
      start = i + 1
      const event = this.line(line)
      if (event) events.push(event)
    }
    this.buffer = this.buffer.slice(start)
    return events
  }

  /** @param {string} line */
  line (line) {
    if (line === '') {
      if (this.data.length === 0) {
        this.event = ''
        return null
      }
      const event = { event: this.event || 'message', data: this.data.join('\n'), id: this.id }
      this.event = ''
      this.data = []
      return event
    }
    if (line.startsWith(':')) return null
    const colon = line.indexOf(':')
    const field = colon < 0 ? line : line.slice(0, colon)
    let value = colon < 0 ? '' : line.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    if (field === 'event') this.event = value
    else if (field === 'data') this.data.push(value)
    else if (field === 'id' && !value.includes('\0')) this.id = value
    return null
  }
}
