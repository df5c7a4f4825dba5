// CollabTransport: a WebSocket look-alike for the stock y-websocket provider
// that reaches collab wherever plain HTTP does.
//
//   new WebsocketProvider(url, room, doc, { WebSocketPolyfill: CollabTransport })
//
// It opens a real WebSocket first; when that fails and GET /transport/probe
// answers, it steps down to Server-Sent Events (read with fetch() streaming)
// plus POST, and to long-poll plus POST when the stream turns out to be
// buffered by a proxy.  The provider sees one socket throughout: `open`,
// `message` (one per y-protocol frame), `close` with a WebSocket close code,
// so its status, sync, awareness and backoff work unchanged.  The wire format
// is docs/transports.md of the collab repository.

import { SseParser, appBase, decodeFrames, encodeFrames, endpointUrl, fromBase64, probeUrl } from './wire.js'

export { appBase, decodeFrames, encodeFrames, endpointUrl, fromBase64, probeUrl, toBase64, SseParser } from './wire.js'

/** The tiers, best first. */
export const TIERS = Object.freeze(['websocket', 'sse', 'poll'])

/** The close reason when an HTTP session ends because a WebSocket works again. */
export const UPGRADE_REASON = 'websocket available again'

/** Defaults of every option of {@link createTransport}; times in milliseconds. */
export const DEFAULTS = Object.freeze({
  /** The real WebSocket class (default: the global one; in Node 20 pass `ws`). */
  WebSocket: undefined,
  /** fetch() (default: the global one). */
  fetch: undefined,
  /** Where the chosen tier is kept: sessionStorage in a browser, this process's memory otherwise. */
  storage: undefined,
  /** Extra request headers for the HTTP tiers (an object, or a function returning one), e.g. Authorization. */
  headers: undefined,
  /** fetch()'s credentials for the HTTP tiers: 'include' sends cookies to a collab on another origin. */
  credentials: 'same-origin',
  /** Which tiers may be used, in ladder order. */
  tiers: TIERS,
  /** A WebSocket that has not opened by then counts as failed. */
  connectTimeout: 4000,
  probeTimeout: 4000,
  /** No `open` event within this time: the stream is buffered, use long-poll. */
  openTimeout: 5000,
  /** No event at all for this long on an open stream: it is buffered or dead (at least 2.5 heartbeats). */
  heartbeatGap: 25000,
  /** A poll may hang this long (the server answers within 25 s). */
  pollTimeout: 40000,
  /** A POST, or the first poll, may take this long. */
  requestTimeout: 20000,
  /** How long an HTTP tier is remembered, and how often a WebSocket is tried again meanwhile. */
  reprobeInterval: 300000,
  /** Network failures of a POST, a poll or a stream resume retried before reporting a close. */
  retries: 3,
  retryDelay: 500,
  /** close() waits this long for queued frames to be posted. */
  closeTimeout: 5000
})

const CONNECTING = 0
const OPEN = 1
const CLOSING = 2
const CLOSED = 3

/** Close codes the server may send that mean "start a new session", not "give up". */
const RESTART_CODES = new Set([4410])

const STORAGE_PREFIX = 'collab-transport:'

const processMemory = new Map()
const memoryStorage = {
  getItem: (key) => (processMemory.has(key) ? processMemory.get(key) : null),
  setItem: (key, value) => { processMemory.set(key, String(value)) },
  removeItem: (key) => { processMemory.delete(key) }
}

function defaultStorage () {
  try {
    if (globalThis.sessionStorage) return globalThis.sessionStorage
  } catch {} // sessionStorage may throw when storage is disabled
  return memoryStorage
}

/**
 * The tier remembered for the collab that `wsUrl` belongs to, if it is
 * still fresh, else null.
 *
 * @param {string} wsUrl
 * @param {object} [options] `storage` and `reprobeInterval` as in {@link createTransport}
 */
export function rememberedTier (wsUrl, options = {}) {
  const storage = options.storage || defaultStorage()
  const maxAge = options.reprobeInterval ?? DEFAULTS.reprobeInterval
  try {
    const entry = JSON.parse(storage.getItem(STORAGE_PREFIX + appBase(wsUrl)) || 'null')
    if (entry && TIERS.includes(entry.tier) && Date.now() - entry.at < maxAge) return entry.tier
  } catch {}
  return null
}

/** Forget the tier chosen for the collab that `wsUrl` belongs to: the next connection tries a WebSocket first. */
export function forgetTier (wsUrl, options = {}) {
  const storage = options.storage || defaultStorage()
  try { storage.removeItem(STORAGE_PREFIX + appBase(wsUrl)) } catch {}
}

/**
 * Sessions this process (or tab) lost without a goodbye, by server: a later
 * connection to the same server ends them, so that the presence they still
 * hold on the server (which lets one connection own a client's presence)
 * does not shadow the new session's until they expire.
 */
const orphans = new Map()
const ORPHANS_KEPT = 8
const ORPHAN_AGE = 5 * 60 * 1000

function adoptOrphan (wsUrl, sid) {
  const base = appBase(wsUrl)
  const list = (orphans.get(base) || []).filter((o) => o.sid !== sid)
  list.push({ url: wsUrl, sid, at: Date.now() })
  orphans.set(base, list.slice(-ORPHANS_KEPT))
}

function rememberTier (wsUrl, tier, options) {
  const storage = options.storage || defaultStorage()
  try { storage.setItem(STORAGE_PREFIX + appBase(wsUrl), JSON.stringify({ tier, at: Date.now() })) } catch {}
}

/**
 * The close code reported to the provider for an HTTP refusal without a
 * `close_code`: only collab's own JSON errors are taken at their word; a
 * proxy's error page is a transient failure (1006), except 413, which is a
 * size limit a retry would hit again.
 */
function statusCode (status, fromCollab) {
  if (status === 413) return 1009
  if (!fromCollab) return 1006
  if (status === 401) return 4401
  if (status === 403) return 4403
  if (status === 404) return 4404
  if (status === 429) return 4429
  if (status === 503) return 1013
  return 1006
}

/** A session the server forgot ends with 4410: y-websocket must reconnect, so it sees 1006. */
function reportedCode (code) {
  const n = Number(code)
  if (!Number.isInteger(n)) return 1006
  return RESTART_CODES.has(n) ? 1006 : n
}

function toBytes (data) {
  if (data instanceof Uint8Array) return data.slice()
  if (data instanceof ArrayBuffer) return new Uint8Array(data.slice(0))
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength))
  if (typeof data === 'string') return new TextEncoder().encode(data)
  throw new TypeError('CollabTransport.send takes an ArrayBuffer, a typed array or a string')
}

function detach (ws) {
  ws.onopen = ws.onmessage = ws.onclose = null
  ws.onerror = () => {} // Node's ws throws an error event nobody listens to
}

/**
 * A CollabTransport class with its own options, e.g.
 * `createTransport({ WebSocket: ws })` in Node 20 (no global WebSocket),
 * `createTransport({ tiers: ['sse', 'poll'] })` to skip WebSockets.
 *
 * @param {Partial<typeof DEFAULTS>} [options]
 */
export function createTransport (options = {}) {
  const config = Object.freeze({ ...DEFAULTS, ...options })
  return class CollabTransport extends Transport {
    static config = config
  }
}

class Transport extends EventTarget {
  static CONNECTING = CONNECTING
  static OPEN = OPEN
  static CLOSING = CLOSING
  static CLOSED = CLOSED
  static config = DEFAULTS

  /** The same class with some options changed. */
  static with (options) {
    return createTransport({ ...this.config, ...options })
  }

  get CONNECTING () { return CONNECTING }
  get OPEN () { return OPEN }
  get CLOSING () { return CLOSING }
  get CLOSED () { return CLOSED }

  /**
   * @param {string | URL} url a collab WebSocket URL, `ws(s)://host/prefix/ws/<doc>?params`
   * @param {string | string[]} [protocols]
   */
  constructor (url, protocols = []) {
    super()
    this.url = String(url)
    this._base = appBase(this.url) // throws on a URL without /ws/, as WebSocket throws on a bad URL
    this.protocols = protocols
    this.protocol = ''
    this.extensions = ''
    this.binaryType = 'blob'
    this.bufferedAmount = 0
    this.readyState = CONNECTING
    /** @type {'websocket'|'sse'|'poll'|null} which tier this connection uses (null until chosen) */
    this.transport = null
    this.onopen = this.onmessage = this.onclose = this.onerror = this.ontransport = null
    this._config = /** @type {any} */ (this.constructor).config
    this._timers = new Set()
    this._requests = new Set()
    this._ws = null
    this._stream = null // the AbortController of the current stream or poll
    this._heartbeat = null
    this._resumes = 0
    this._sid = null
    this._last = 0
    this._postMax = 1 << 20
    this._heartbeatMs = 10000
    this._seq = 0
    this._queue = []
    this._posting = false
    this._closing = null
    this._probed = false // /transport/probe answered for this connection
    this._saidGoodbye = false
    this._onPageHide = null
    this._orphaning = null // the goodbyes of sessions lost earlier, while they are on their way
    queueMicrotask(() => this._start())
  }

  /** The HTTP session id (null on a WebSocket or before the session opened). */
  get sid () {
    return this._sid
  }

  // --- the WebSocket surface ---------------------------------------------------

  /** @param {ArrayBuffer | ArrayBufferView | string} data */
  send (data) {
    if (this.readyState === CONNECTING) {
      throw new DOMException('Failed to execute send: still in CONNECTING state', 'InvalidStateError')
    }
    if (this.readyState !== OPEN) return
    if (this._ws) {
      this._ws.send(data)
      return
    }
    const frame = toBytes(data)
    this._queue.push(frame)
    this.bufferedAmount += frame.length
    // Frames sent in one turn (a SyncStep1 and the awareness after it) share a POST.
    if (!this._posting && this._queue.length === 1) this._after(0, () => this._flush())
  }

  /**
   * @param {number} [code]
   * @param {string} [reason]
   */
  close (code, reason) {
    if (code !== undefined && code !== 1000 && !(code >= 3000 && code <= 4999)) {
      throw new DOMException(`close code ${code} is neither 1000 nor in 3000-4999`, 'InvalidAccessError')
    }
    if (this.readyState === CLOSING || this.readyState === CLOSED) return
    if (this._ws) {
      this.readyState = CLOSING
      this._ws.close(code, reason)
      return
    }
    if (this.readyState === CONNECTING) {
      // As a browser does: closing a socket that is not open yet fails it.
      this._teardown()
      this.readyState = CLOSED
      setTimeout(() => this._report(1006, 'closed before the connection was established', false), 0)
      return
    }
    this._closeGracefully(code ?? 1005, reason ?? '')
  }

  // --- the ladder --------------------------------------------------------------

  _start () {
    if (this.readyState !== CONNECTING) return
    this._endOrphans()
    const tiers = this._config.tiers
    const remembered = rememberedTier(this.url, this._config)
    if (remembered && remembered !== 'websocket' && tiers.includes(remembered)) {
      this._useHttp(remembered)
    } else if (tiers.includes('websocket') && this._webSocketClass()) {
      this._tryWebSocket()
    } else {
      // No WebSocket to try: the HTTP tier itself tells "up" from "offline".
      const tier = tiers.find((t) => t !== 'websocket')
      if (tier) this._useHttp(tier)
      else setTimeout(() => this._finish(1006, 'no tier is allowed', false), 0)
    }
  }

  _webSocketClass () {
    const WS = this._config.WebSocket || globalThis.WebSocket
    return WS && WS !== this.constructor ? WS : null
  }

  _fetch (url, init) {
    return (this._config.fetch || globalThis.fetch)(url, init)
  }

  _headers () {
    const headers = this._config.headers
    return (typeof headers === 'function' ? headers() : headers) || {}
  }

  _tryWebSocket () {
    const WS = this._webSocketClass()
    let ws
    try {
      ws = new WS(this.url, this.protocols)
    } catch {
      this._probeThenHttp()
      return
    }
    ws.binaryType = 'arraybuffer'
    let settled = false
    const failed = () => {
      if (settled) return
      settled = true
      this._clear(timer)
      detach(ws)
      try { ws.close() } catch {}
      // A fast refusal (a proxy that strips Upgrade answers at once) as well as a slow one.
      if (this.readyState === CONNECTING) this._probeThenHttp()
    }
    const timer = this._after(this._config.connectTimeout, failed)
    ws.onerror = failed
    ws.onclose = failed
    ws.onopen = () => {
      if (settled) return
      settled = true
      this._clear(timer)
      if (this.readyState !== CONNECTING) {
        detach(ws)
        ws.close()
        return
      }
      this._ws = ws
      forgetTier(this.url, this._config)
      ws.onmessage = (event) => {
        const data = typeof event.data === 'string' ? event.data : this._messageData(new Uint8Array(event.data))
        this._emit('message', { data })
      }
      ws.onerror = () => this._emit('error')
      ws.onclose = (event) => {
        this._teardown()
        this.readyState = CLOSED
        this._emit('close', { code: event.code, reason: event.reason, wasClean: event.wasClean })
      }
      this.protocol = ws.protocol || ''
      this._chose('websocket')
      this._opened()
    }
  }

  /** Does plain HTTP reach collab?  Tells "WebSockets blocked" from "offline". */
  async _probeThenHttp () {
    const controller = this._request()
    const timer = this._after(this._config.probeTimeout, () => controller.abort())
    let ok = false
    try {
      const response = await this._fetch(probeUrl(this.url), { cache: 'no-store', signal: controller.signal })
      ok = response.ok && (await response.json()).ok === true
    } catch {}
    this._clear(timer)
    this._requests.delete(controller)
    if (this.readyState !== CONNECTING) return
    const tier = this._config.tiers.find((t) => t !== 'websocket')
    this._probed = ok
    if (!ok) this._fail(1006, 'the server is unreachable')
    else if (!tier) this._fail(1006, 'WebSockets are blocked and no HTTP tier is allowed')
    else this._useHttp(tier)
  }

  _useHttp (tier) {
    this._chose(tier)
    if (tier === 'sse') this._openStream(false)
    else this._pollLoop()
  }

  _chose (tier) {
    this.transport = tier
    this._emit('transport', { transport: tier })
  }

  _opened () {
    this.readyState = OPEN
    if (this.transport !== 'websocket') {
      rememberTier(this.url, this.transport, this._config)
      if (this._config.tiers.includes('websocket') && this._webSocketClass()) this._scheduleReprobe()
      this._watchPageHide()
    }
    this._emit('open')
  }

  // --- down: Server-Sent Events -----------------------------------------------

  _openStream (resume) {
    const controller = this._request()
    this._stream = controller
    const params = resume ? { sid: this._sid, last: this._last } : {}
    let gotOpen = resume
    const openTimer = resume
      ? null
      : this._after(this._config.openTimeout, () => {
        if (!gotOpen && this._stream === controller) this._streamBuffered()
      })
    const current = () => this._stream === controller
    let answered = false
    const run = async () => {
      const response = await this._fetch(endpointUrl(this.url, 'sse', params), {
        headers: { Accept: 'text/event-stream', ...this._headers() },
        credentials: this._config.credentials,
        cache: 'no-store',
        signal: controller.signal
      })
      answered = true
      if (!current()) return
      if (!response.ok) {
        this._clear(openTimer)
        await this._httpError(response)
        return
      }
      if (!(response.headers.get('content-type') || '').startsWith('text/event-stream') || !response.body) {
        this._clear(openTimer)
        this._streamLost() // a captive portal's or a proxy's page
        return
      }
      if (resume) this._alive()
      const reader = response.body.getReader()
      const decoder = new TextDecoder()
      const parser = new SseParser()
      for (;;) {
        const { value, done } = await reader.read()
        if (!current()) {
          reader.cancel().catch(() => {})
          return
        }
        if (done) break
        for (const event of parser.feed(decoder.decode(value, { stream: true }))) {
          if (event.event === 'open') {
            gotOpen = true
            this._clear(openTimer)
          }
          this._onStreamEvent(event)
          if (!current()) {
            reader.cancel().catch(() => {})
            return
          }
        }
      }
      this._streamLost()
    }
    run().catch(() => {
      if (!current()) return
      this._clear(openTimer)
      // No answer at all, and nothing showed that HTTP works: offline, not a
      // proxy cutting streams (which answered, or let the probe through).
      if (!answered && !this._probed && this.readyState === CONNECTING) this._fail(1006, 'the server is unreachable')
      else this._streamLost()
    }).finally(() => this._requests.delete(controller))
  }

  _onStreamEvent (event) {
    this._resumes = 0
    if (event.event === 'open') {
      const info = parseJson(event.data)
      if (!info || !info.sid) {
        this._fail(1002, 'the stream opened without a session')
        return
      }
      if (this._sid && info.sid !== this._sid) {
        adoptOrphan(this.url, String(info.sid)) // the session this resume opened is not used
        this._fail(1006, 'session expired') // a resume that got a new session: resync
        return
      }
      this._session(info)
      this._alive()
      if (this.readyState === CONNECTING) this._opened()
    } else if (event.event === 'close') {
      const info = parseJson(event.data) || {}
      this._finish(reportedCode(info.code), String(info.reason || ''), true)
    } else if (event.event === 'message') {
      const n = Number(event.id)
      if (Number.isInteger(n) && n > this._last) this._last = n
      this._alive()
      this._deliverText(event.data)
    }
  }

  _session (info) {
    this._sid = String(info.sid)
    if (Number(info.heartbeat_ms) > 0) this._heartbeatMs = Number(info.heartbeat_ms)
    if (Number(info.post_max) > 0) this._postMax = Number(info.post_max)
  }

  /** Any event on the stream: it is alive; silence for too long means buffered or dead. */
  _alive () {
    this._clear(this._heartbeat)
    const gap = Math.max(this._config.heartbeatGap, 2.5 * this._heartbeatMs)
    this._heartbeat = this._after(gap, () => {
      if (this.readyState !== OPEN || this.transport !== 'sse') return
      // Heartbeats stopped arriving while the connection looks up: a proxy
      // that buffers the stream.  Reconnecting on long-poll is cheap (a resync
      // by state vector), and the tier is probed upward again later.
      rememberTier(this.url, 'poll', this._config)
      this._fail(1006, 'the stream stalled: long-poll next')
    })
  }

  /** No `open` event in time: a proxy holds the stream back.  Long-poll instead. */
  _streamBuffered () {
    this._stopStream()
    if (this._config.tiers.includes('poll')) {
      this._chose('poll')
      this._pollLoop()
    } else {
      this._fail(1006, 'the stream is buffered and long-poll is not allowed')
    }
  }

  _streamLost () {
    this._stream = null
    this._clear(this._heartbeat)
    if (this.readyState === CONNECTING) {
      // The stream broke before it opened, while plain requests work: something
      // in between cuts streaming responses.  Long-poll does not stream.
      if (this._config.tiers.includes('poll')) {
        this._chose('poll')
        this._pollLoop()
      } else {
        this._fail(1006, 'the stream could not be opened')
      }
      return
    }
    if (this.readyState !== OPEN) return
    this._resumes += 1
    if (this._resumes > this._config.retries) {
      this._fail(1006, 'the stream was lost')
      return
    }
    // Resume the same session from the last frame received (the server buffers the rest).
    this._after(this._config.retryDelay * 2 ** (this._resumes - 1), () => {
      if (this.readyState === OPEN && this._stream === null) this._openStream(true)
    })
  }

  _stopStream () {
    const controller = this._stream
    this._stream = null
    this._clear(this._heartbeat)
    if (controller) controller.abort()
  }

  // --- down: long-poll ---------------------------------------------------------

  async _pollLoop () {
    let failures = 0
    while (this.readyState === CONNECTING || this.readyState === OPEN) {
      const controller = this._request()
      this._stream = controller
      const params = this._sid ? { sid: this._sid, after: this._last } : {}
      const limit = this._sid ? this._config.pollTimeout : this._config.requestTimeout
      const timer = this._after(limit, () => controller.abort())
      let response = null
      let body = null
      try {
        response = await this._fetch(endpointUrl(this.url, 'poll', params), {
          headers: this._headers(),
          credentials: this._config.credentials,
          cache: 'no-store',
          signal: controller.signal
        })
        if (response.ok) body = await response.json()
      } catch {
        body = null
      }
      this._clear(timer)
      this._requests.delete(controller)
      if (this._stream !== controller) return // closed, or replaced
      if (response && !response.ok) {
        await this._httpError(response)
        return
      }
      if (!body || typeof body !== 'object' || !Array.isArray(body.frames ?? [])) {
        failures += 1
        if (!this._sid || failures > this._config.retries) {
          this._fail(1006, this._sid ? 'long-poll failed' : 'long-poll could not be opened')
          return
        }
        await new Promise((resolve) => this._after(this._config.retryDelay * 2 ** (failures - 1), resolve))
        continue
      }
      failures = 0
      if (!this._sid) {
        if (!body.sid) {
          this._fail(1002, 'long-poll opened without a session')
          return
        }
        this._session(body)
        this._opened()
      }
      const frames = body.frames || []
      for (const [n, data] of frames) {
        if (this.readyState !== OPEN || this._stream !== controller) return
        if (Number(n) <= this._last) continue // already delivered (a retried poll)
        this._last = Number(n)
        this._deliverText(data)
      }
      if (body.close) {
        this._finish(reportedCode(body.close.code), String(body.close.reason || ''), true)
        return
      }
    }
  }

  // --- up: POST ----------------------------------------------------------------

  _flush () {
    if (this._posting || this._queue.length === 0 || !this._sid || this._orphaning) return
    if (this.readyState !== OPEN && this.readyState !== CLOSING) return
    let count = 0
    let size = 0
    // Fill one POST up to the server's post_max; a frame bigger than that goes
    // alone, and the server refuses it as a WebSocket refuses a big message.
    while (count < this._queue.length && (count === 0 || size + this._queue[count].length + 5 <= this._postMax)) {
      size += this._queue[count].length + 5
      count += 1
    }
    const batch = this._queue.splice(0, count)
    this._posting = true
    this._seq += 1
    this._post(encodeFrames(batch), this._seq, 0, batch.reduce((n, f) => n + f.length, 0))
  }

  async _post (body, seq, attempt, bytes) {
    const controller = this._request()
    const timer = this._after(this._config.requestTimeout, () => controller.abort())
    let response = null
    let reply = null
    try {
      response = await this._fetch(endpointUrl(this.url, 'send', { sid: this._sid }), {
        method: 'POST',
        headers: { 'Content-Type': 'application/octet-stream', 'Collab-Seq': String(seq), ...this._headers() },
        body,
        credentials: this._config.credentials,
        cache: 'no-store',
        signal: controller.signal
      })
      if (response.ok) reply = new Uint8Array(await response.arrayBuffer())
    } catch {
      reply = null
    }
    this._clear(timer)
    this._requests.delete(controller)
    if (this.readyState === CLOSED) return
    if (response && !response.ok) {
      await this._httpError(response)
      return
    }
    if (reply === null) {
      // The same body with the same Collab-Seq: the server applies it once.
      if (attempt >= this._config.retries) {
        this._fail(1006, 'frames could not be sent')
        return
      }
      this._after(this._config.retryDelay * 2 ** attempt, () => this._post(body, seq, attempt + 1, bytes))
      return
    }
    this._posting = false
    this.bufferedAmount = Math.max(0, this.bufferedAmount - bytes)
    let frames
    try {
      frames = decodeFrames(reply)
    } catch {
      this._fail(1002, 'a malformed reply from the server')
      return
    }
    // The immediate replies (SyncStep2, awareness) arrive as messages.
    for (const frame of frames) {
      if (this.readyState !== OPEN) break
      this._emit('message', { data: this._messageData(frame) })
    }
    this._flush()
    this._closedIfDrained()
  }

  // --- ending ------------------------------------------------------------------

  async _httpError (response) {
    let info = null
    try {
      info = await response.json()
    } catch {}
    const fromCollab = Boolean(info && typeof info === 'object' && ('error' in info || 'close_code' in info))
    const code = fromCollab && info.close_code != null
      ? reportedCode(info.close_code)
      : statusCode(response.status, fromCollab)
    const reason = (fromCollab && (info.message || info.error)) || `HTTP ${response.status}`
    this._fail(code, String(reason))
  }

  _closeGracefully (code, reason) {
    this.readyState = CLOSING
    this._stopStream()
    this._closing = { code, reason }
    this._after(this._config.closeTimeout, () => {
      if (this._sid) adoptOrphan(this.url, this._sid)
      this._finish(code, reason, false)
    })
    this._flush()
    this._closedIfDrained()
  }

  _closedIfDrained () {
    if (this.readyState === CLOSING && this._closing && !this._posting && this._queue.length === 0) {
      this._sayGoodbye()
    }
  }

  /**
   * `POST /send/{doc}?sid=&close=1`: the session ends now, as a WebSocket
   * closed with 1000, so this client's presence leaves at once instead of
   * when the server expires the session.
   */
  async _sayGoodbye () {
    if (this._saidGoodbye) return
    this._saidGoodbye = true
    const controller = this._request()
    try {
      await this._fetch(endpointUrl(this.url, 'send', { sid: this._sid, close: 1 }), {
        method: 'POST',
        headers: { 'Content-Type': 'application/octet-stream', ...this._headers() },
        body: new Uint8Array(0),
        credentials: this._config.credentials,
        cache: 'no-store',
        signal: controller.signal
      })
    } catch {
      adoptOrphan(this.url, this._sid) // offline: the next connection says it
    }
    this._requests.delete(controller)
    if (this.readyState === CLOSING) this._finish(this._closing.code, this._closing.reason, true)
  }

  /** A closing tab cannot wait for a fetch: a beacon carries the queued frames and the goodbye. */
  _watchPageHide () {
    const nav = globalThis.navigator
    if (typeof globalThis.addEventListener !== 'function' || !nav || typeof nav.sendBeacon !== 'function') return
    this._onPageHide = () => {
      if (this.readyState !== OPEN || !this._sid) return
      const body = new Blob([encodeFrames(this._queue)], { type: 'application/octet-stream' })
      if (nav.sendBeacon(endpointUrl(this.url, 'send', { sid: this._sid, close: 1 }), body)) this._queue = []
    }
    globalThis.addEventListener('pagehide', this._onPageHide)
  }

  _fail (code, reason) {
    // Lost, not ended by the server: the session may live on there for a while.
    if (code === 1006 && this._sid && !this._saidGoodbye) adoptOrphan(this.url, this._sid)
    this._finish(code, reason, false)
  }

  /** Say goodbye for the sessions lost earlier on this server (in the background; kept on a network error). */
  _endOrphans () {
    const base = this._base
    const list = orphans.get(base)
    if (!list) return
    orphans.delete(base)
    const goodbyes = list.filter((orphan) => Date.now() - orphan.at < ORPHAN_AGE).map((orphan) =>
      this._fetch(endpointUrl(orphan.url, 'send', { sid: orphan.sid, close: 1 }), {
        method: 'POST',
        headers: { 'Content-Type': 'application/octet-stream', ...this._headers() },
        body: new Uint8Array(0),
        credentials: this._config.credentials,
        cache: 'no-store'
      }).catch(() => adoptOrphan(orphan.url, orphan.sid)))
    // This session's first POST (its presence) waits for them: sent before,
    // its presence would be refused as the old session's, then removed with it.
    const done = Promise.all(goodbyes).then(() => {
      if (this._orphaning === done) this._orphaning = null
      this._flush()
    })
    this._orphaning = done
  }

  _finish (code, reason, wasClean) {
    if (this.readyState === CLOSED) return
    this._teardown()
    this.readyState = CLOSED
    this._report(code, reason, wasClean)
  }

  _report (code, reason, wasClean) {
    if (!wasClean) this._emit('error')
    this._emit('close', { code, reason, wasClean })
  }

  _teardown () {
    for (const timer of this._timers) clearTimeout(timer)
    this._timers.clear()
    for (const controller of this._requests) controller.abort()
    this._requests.clear()
    this._stream = null
    this._queue = []
    this._posting = false
    this.bufferedAmount = 0
    if (this._ws) detach(this._ws)
    if (this._onPageHide) globalThis.removeEventListener('pagehide', this._onPageHide)
    this._onPageHide = null
  }

  // --- upward ------------------------------------------------------------------

  _scheduleReprobe () {
    this._after(this._config.reprobeInterval, () => this._reprobe())
  }

  /** On an HTTP tier: does a WebSocket work again?  Then end this session so the provider reconnects on one. */
  _reprobe () {
    if (this.readyState !== OPEN) return
    const WS = this._webSocketClass()
    let ws
    try {
      ws = new WS(this.url, this.protocols)
    } catch {
      this._scheduleReprobe()
      return
    }
    let settled = false
    const end = (works) => {
      if (settled) return
      settled = true
      this._clear(timer)
      detach(ws)
      try { ws.close(1000) } catch {}
      if (this.readyState !== OPEN) return
      if (!works) {
        rememberTier(this.url, this.transport, this._config) // still blocked: keep the tier another while
        this._scheduleReprobe()
        return
      }
      forgetTier(this.url, this._config)
      this._closeGracefully(1000, UPGRADE_REASON)
    }
    const timer = this._after(this._config.connectTimeout, () => end(false))
    ws.onopen = () => end(true)
    ws.onerror = () => end(false)
    ws.onclose = () => end(false)
  }

  // --- helpers -----------------------------------------------------------------

  _deliverText (base64) {
    let bytes
    try {
      bytes = fromBase64(String(base64))
    } catch {
      this._fail(1002, 'a malformed frame from the server')
      return
    }
    this._emit('message', { data: this._messageData(bytes) })
  }

  _messageData (bytes) {
    const buffer = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength
      ? bytes.buffer
      : bytes.slice().buffer
    return this.binaryType === 'blob' && typeof Blob !== 'undefined' ? new Blob([buffer]) : buffer
  }

  _emit (type, props = {}) {
    const event = new Event(type)
    for (const [key, value] of Object.entries(props)) {
      Object.defineProperty(event, key, { value, enumerable: true })
    }
    const handler = this[`on${type}`]
    if (typeof handler === 'function') {
      try {
        handler.call(this, event)
      } catch (err) {
        setTimeout(() => { throw err }, 0) // reported like an error in a WebSocket handler, not swallowed
      }
    }
    this.dispatchEvent(event)
  }

  _after (ms, fn) {
    const timer = setTimeout(() => {
      this._timers.delete(timer)
      fn()
    }, ms)
    this._timers.add(timer)
    return timer
  }

  _clear (timer) {
    if (timer == null) return
    clearTimeout(timer)
    this._timers.delete(timer)
  }

  _request () {
    const controller = new AbortController()
    this._requests.add(controller)
    return controller
  }
}

function parseJson (text) {
  try {
    return JSON.parse(text)
  } catch {
    return null
  }
}

/**
 * The WebSocketPolyfill for y-websocket, with the default options (the
 * global WebSocket and fetch).
 */
export const CollabTransport = createTransport()
export default CollabTransport
