// The bench's load generator: many Yjs WebSocket clients in one Node.js process.
//
//   node gen.mjs '{"scenario": "s1", "url": "ws://127.0.0.1:PORT/ws/", ...}'
//
// Prints one JSON object (the result) on stdout; progress goes to stderr.
//
// Most clients are light: they speak the sync protocol but keep no Y.Doc.
// Writers put unique markers "{W.S}" (writer W, sequence S) into the text,
// and a light reader finds them in the raw update bytes (a Yjs update keeps
// an inserted string as UTF-8, and merging updates only concatenates them),
// so it needs no CRDT work.  A few full clients apply every update to a real
// Y.Doc, and their final text is compared with what was written: a run is
// "converged" only when both checks pass.  Each result carries the
// generator's own CPU share over the timed phase, so a figure limited by
// the generator, not the server, can be flagged.

import { randomBytes } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import inspector from 'node:inspector'
import net from 'node:net'
import { performance } from 'node:perf_hooks'
import WebSocket from 'ws'
import * as Y from 'yjs'

const REMOTE = Symbol('remote')
const CLK_TCK = 100 // USER_HZ on Linux
let TIMEOUT_MS = 120000 // set from the config

// -- wire protocol -----------------------------------------------------------

function varUint (n) {
  const out = []
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80)
    n = Math.floor(n / 128)
  }
  out.push(n)
  return out
}

function syncFrame (kind, payload) {
  const head = [0, kind, ...varUint(payload.length)]
  const frame = new Uint8Array(head.length + payload.length)
  frame.set(head, 0)
  frame.set(payload, head.length)
  return frame
}

const EMPTY_STEP2 = Uint8Array.of(0, 1, 2, 0, 0)
const EMPTY_STEP1 = Uint8Array.of(0, 0, 1, 0)
const step1 = (sv) => syncFrame(0, sv)
const step2 = (update) => syncFrame(1, update)
const updateFrame = (update) => syncFrame(2, update)

/** Parse [0, kind, varBytes] frames; null for anything else (awareness...). */
function parseSync (buf) {
  if (buf.length < 3 || buf[0] !== 0) return null
  const kind = buf[1]
  let len = 0
  let shift = 0
  let i = 2
  for (;;) {
    if (i >= buf.length) return null
    const b = buf[i++]
    len += (b & 0x7f) * 2 ** shift
    if (b < 0x80) break
    shift += 7
  }
  if (i + len > buf.length) return null
  return { kind, payload: buf.subarray(i, i + len) }
}

const marker = (w, s) => `{${w}.${s}}`

/** Call cb(w, s) for every "{W.S}" in buf. */
function scanMarkers (buf, cb) {
  const n = buf.length
  let i = buf.indexOf(0x7b)
  while (i !== -1) {
    let j = i + 1
    let w = 0
    let s = 0
    const w0 = j
    while (j < n && buf[j] >= 48 && buf[j] <= 57 && j - w0 < 8) w = w * 10 + buf[j++] - 48
    if (j > w0 && j < n && buf[j] === 0x2e) {
      const s0 = ++j
      while (j < n && buf[j] >= 48 && buf[j] <= 57 && j - s0 < 9) s = s * 10 + buf[j++] - 48
      if (j > s0 && j < n && buf[j] === 0x7d) {
        cb(w, s)
        i = buf.indexOf(0x7b, j + 1)
        continue
      }
    }
    i = buf.indexOf(0x7b, i + 1)
  }
}

// -- measuring ---------------------------------------------------------------

// A server of several processes (collab serve --workers) is measured as its
// process tree: the supervisor, the workers and the private redis-server.
let SERVER_TREE = false

function descendants (pid) {
  try {
    const kids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim()
    if (!kids) return []
    return kids.split(' ').map(Number).flatMap(k => [k, ...descendants(k)])
  } catch {
    return []
  }
}

function serverStat (pid) {
  if (!pid) return { cpu: 0, rss: 0 }
  if (SERVER_TREE) {
    const all = [pid, ...descendants(pid)].map(processStat)
    return { cpu: all.reduce((s, p) => s + p.cpu, 0), rss: all.reduce((s, p) => s + p.rss, 0) }
  }
  return processStat(pid)
}

function processStat (pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const cpu = (Number(fields[11]) + Number(fields[12])) / CLK_TCK
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    const rss = Number(/VmRSS:\s+(\d+)/.exec(status)[1]) * 1024
    return { cpu, rss }
  } catch {
    return { cpu: 0, rss: 0 }
  }
}

// BENCH_GEN_PROFILE=DIR writes a V8 CPU profile of each timed phase of the
// generator there (to see what the generator spends its core on).
let profileSession = null
let profileCount = 0

/** Wall time, our CPU and the server's CPU between start() and stop(). */
class Phase {
  constructor (serverPid) {
    this.pid = serverPid
    if (process.env.BENCH_GEN_PROFILE) {
      profileSession = profileSession || new inspector.Session()
      profileSession.connect()
      profileSession.post('Profiler.enable')
      profileSession.post('Profiler.setSamplingInterval', { interval: 100 })
      profileSession.post('Profiler.start')
    }
    this.t0 = performance.now()
    this.c0 = process.cpuUsage()
    this.s0 = serverStat(serverPid)
  }

  stop () {
    const wall = (performance.now() - this.t0) / 1000
    const c = process.cpuUsage(this.c0)
    if (process.env.BENCH_GEN_PROFILE) {
      const file = `${process.env.BENCH_GEN_PROFILE}/phase-${profileCount++}.cpuprofile`
      profileSession.post('Profiler.stop', (err, { profile }) => {
        if (!err) writeFileSync(file, JSON.stringify(profile))
        profileSession.disconnect()
      })
    }
    const cpu = (c.user + c.system) / 1e6
    const s1 = serverStat(this.pid)
    return {
      seconds: wall,
      gen_cpu: wall > 0 ? cpu / wall : 0,
      server_cpu: wall > 0 ? (s1.cpu - this.s0.cpu) / wall : 0,
      server_rss: s1.rss
    }
  }
}

const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))
const tick = () => new Promise(resolve => setImmediate(resolve))

function percentile (sorted, p) {
  if (sorted.length === 0) return NaN
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))
  return sorted[i]
}

class Failure extends Error {}

function log (...args) {
  if (process.env.BENCH_VERBOSE) console.error('[gen]', ...args)
}

// -- a client ----------------------------------------------------------------

const WS_OPTIONS = {
  perMessageDeflate: false,
  maxPayload: 512 * 1024 * 1024,
  skipUTF8Validation: true,
  // A zero mask is valid and lets ws skip masking every frame we send
  // (the mask protects proxies from browser-made payloads; not our case).
  generateMask: (mask) => mask.fill(0)
}

/**
 * One Yjs WebSocket client.  ``doc`` makes it full (every update applied,
 * local changes sent); without it, it is light and only hands the raw
 * payloads to ``onPayload``.
 */
class Client {
  constructor (url, { doc = null, onPayload = null, onStep2 = null, deferApply = false } = {}) {
    this.url = url
    this.doc = doc
    this.onPayload = onPayload
    this.onStep2 = onStep2
    // A joiner being timed keeps the document to apply it after the clock stops.
    this.deferApply = deferApply
    this.deferred = []
    // Bytes of the sync messages up to the server's step 2: one step 2, or a
    // collab server's pieces (sync updates, the last one a step 2).
    this.syncBytes = 0
    this.syncedAt = 0
    this.ws = null
    this.synced = false
    this.closedUnexpectedly = null
    this._sync = null
  }

  /** Open, send our step 1, resolve once the server's step 2 arrived. */
  connect (timeoutMs = TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Failure(`no sync from ${this.url} in ${timeoutMs} ms`)), timeoutMs)
      this._sync = () => { clearTimeout(timer); resolve() }
      const ws = new WebSocket(this.url, WS_OPTIONS)
      this.ws = ws
      ws.binaryType = 'nodebuffer'
      ws.on('open', () => {
        ws.send(this.doc ? step1(Y.encodeStateVector(this.doc)) : EMPTY_STEP1)
      })
      ws.on('message', (data) => this._message(data))
      ws.on('error', (err) => {
        clearTimeout(timer)
        this.closedUnexpectedly = this.closedUnexpectedly || `error: ${err.message}`
        reject(new Failure(`${this.url}: ${err.message}`))
      })
      ws.on('close', (code, reason) => {
        if (!this.closing) this.closedUnexpectedly = this.closedUnexpectedly || `closed ${code} ${reason}`
        clearTimeout(timer)
        reject(new Failure(`${this.url} closed ${code} ${reason}`))
      })
    })
  }

  _message (buf) {
    // collab announces a sync in pieces with [2, 1, bytes]: then sync updates
    // before the step 2 are pieces of it (elsewhere they are live edits).
    if (buf[0] === 2 && buf[1] === 1) { this.pieces = true; return }
    const msg = parseSync(buf)
    if (msg === null) return // awareness and the like
    if (msg.kind === 0) {
      // The server's step 1: answer with what it lacks.
      const reply = this.doc ? step2(Y.encodeStateAsUpdate(this.doc, msg.payload)) : EMPTY_STEP2
      this.ws.send(reply)
      return
    }
    if (!this.synced && (msg.kind === 1 || this.pieces)) this.syncBytes += buf.length
    if (msg.kind === 1 && !this.synced) {
      this.synced = true
      this.syncedAt = performance.now()
      if (this.onStep2) this.onStep2(msg.payload)
      if (this.doc && this.deferApply) this.deferred.push(msg.payload)
      else if (this.doc) Y.applyUpdate(this.doc, msg.payload, REMOTE)
      if (this.onPayload) this.onPayload(msg.payload)
      this._sync()
      return
    }
    if (this.doc && this.deferApply && !this.synced) this.deferred.push(msg.payload)
    else if (this.doc) Y.applyUpdate(this.doc, msg.payload, REMOTE)
    if (this.onPayload) this.onPayload(msg.payload)
  }

  send (frame) {
    this.ws.send(frame)
  }

  /** The full text, once the deferred document (if any) is applied. */
  text () {
    for (const update of this.deferred) Y.applyUpdate(this.doc, update, REMOTE)
    this.deferred = []
    return this.doc.getText('text').toString()
  }

  /**
   * Change the full doc with fn(text) and send the change.  (No 'update'
   * listener: Yjs would encode every remote update just for us to drop it.)
   */
  edit (fn) {
    const sv = Y.encodeStateVector(this.doc)
    fn(this.doc.getText('text'))
    this.ws.send(updateFrame(Y.encodeStateAsUpdate(this.doc, sv)))
  }

  close () {
    this.closing = true
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000)
  }

  closed () {
    return new Promise(resolve => {
      if (!this.ws || this.ws.readyState === WebSocket.CLOSED) resolve()
      else this.ws.once('close', () => resolve())
    })
  }
}

/**
 * A joiner on a bare TCP socket that only counts bytes: it does the
 * WebSocket handshake, sends a sync step 1, answers the server's step 1
 * and reads the server's step 2 into one reused buffer without ever
 * assembling it.  Receiving 20 MiB documents through ``ws`` costs the
 * generator more than serving them costs a server (copies and GC), so the
 * crowd joining a big document is made of these; one full ``Client``
 * beside them checks the text.
 */
class RawJoiner {
  constructor (url) {
    const u = new URL(url)
    this.url = url
    this.host = u.hostname
    this.port = Number(u.port)
    this.path = u.pathname
    this.syncedAt = 0
    // Bytes of the sync messages up to the step 2 (one step 2, or pieces).
    this.step2Length = -1
    this._syncBytes = 0
    this.closedUnexpectedly = null
    this._http = Buffer.alloc(0)
    this._upgraded = false
    this._hdr = [] // header bytes of the frame being read
    this._left = 0 // payload bytes left in the current frame
    this._fin = false
    this._opcode = 0
    this._head = [] // the message's first two bytes: [type, sync kind]
    this._msgLength = 0
  }

  connect (timeoutMs = TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Failure(`raw joiner: no sync in ${timeoutMs} ms`)), timeoutMs)
      this._done = () => { clearTimeout(timer); resolve() }
      this._fail = (why) => {
        clearTimeout(timer)
        this.closedUnexpectedly = this.closedUnexpectedly || why
        reject(new Failure(why))
      }
      this.sock = net.connect({
        host: this.host,
        port: this.port,
        onread: { buffer: Buffer.allocUnsafe(1 << 20), callback: (n, buf) => { this._data(buf, n) } }
      })
      this.sock.setNoDelay(true)
      this.sock.on('connect', () => {
        const key = randomBytes(16).toString('base64')
        this.sock.write(`GET ${this.path} HTTP/1.1\r\nHost: ${this.host}:${this.port}\r\n` +
          `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\n` +
          'Sec-WebSocket-Version: 13\r\n\r\n')
      })
      this.sock.on('error', (err) => this._fail(`raw joiner: ${err.message}`))
      this.sock.on('close', () => { if (!this.closing && !this.syncedAt) this._fail('raw joiner: closed before sync') })
    })
  }

  _send (payload) {
    // Client frames are masked; a zero mask leaves the payload as it is.
    if (payload.length >= 126) throw new Error('raw joiner sends only small frames')
    this.sock.write(Buffer.concat([Buffer.from([0x82, 0x80 | payload.length, 0, 0, 0, 0]), Buffer.from(payload)]))
  }

  _data (buf, n) {
    if (this._upgraded) {
      this._frames(buf, 0, n)
      return
    }
    this._http = Buffer.concat([this._http, buf.subarray(0, n)])
    const end = this._http.indexOf('\r\n\r\n')
    if (end < 0) return
    if (!this._http.subarray(0, 13).toString().startsWith('HTTP/1.1 101')) {
      this._fail(`raw joiner: upgrade refused: ${this._http.subarray(0, 40).toString()}`)
      return
    }
    this._upgraded = true
    this._send(EMPTY_STEP1)
    const rest = this._http.subarray(end + 4)
    this._http = null
    this._frames(rest, 0, rest.length)
  }

  _frames (buf, i, n) {
    while (i < n) {
      if (this._left === 0) {
        // A frame header, byte by byte: 2 bytes, then 2 or 8 bytes of length.
        const h = this._hdr
        h.push(buf[i++])
        if (h.length < 2) continue
        const len7 = h[1] & 0x7f
        const size = len7 === 126 ? 4 : len7 === 127 ? 10 : 2
        if (h.length < size) continue
        let len = len7
        if (len7 === 126) len = h[2] * 256 + h[3]
        if (len7 === 127) { len = 0; for (let k = 2; k < 10; k++) len = len * 256 + h[k] }
        this._fin = (h[0] & 0x80) !== 0
        const opcode = h[0] & 0x0f
        if (opcode !== 0) this._opcode = opcode
        this._hdr = []
        this._left = len
        if (len === 0) this._endFrame()
        continue
      }
      const take = Math.min(this._left, n - i)
      if (this._opcode === 2) {
        for (let k = 0; k < take && this._head.length < 2; k++) this._head.push(buf[i + k])
        this._msgLength += take
      }
      i += take
      this._left -= take
      if (this._left === 0) this._endFrame()
    }
  }

  _endFrame () {
    if (this._opcode === 8) {
      if (!this.syncedAt) this._fail('raw joiner: closed by the server')
      return
    }
    if (!this._fin || this._opcode !== 2) return // a ping, or more fragments to come
    const [type, kind] = this._head
    if (type === 0 && kind === 0) this._send(EMPTY_STEP2)
    if (type === 2 && kind === 1) this._pieces = true // collab's announcement of a sync in pieces
    if (type === 0 && (kind === 1 || (kind === 2 && this._pieces)) && !this.syncedAt) this._syncBytes += this._msgLength
    if (type === 0 && kind === 1 && !this.syncedAt) {
      this.syncedAt = performance.now()
      this.step2Length = this._syncBytes
      this._done()
    }
    this._head = []
    this._msgLength = 0
  }

  close () {
    this.closing = true
    if (this.sock) this.sock.destroy()
  }

  closed () {
    return Promise.resolve()
  }
}

/**
 * Connect clients with at most ``concurrency`` handshakes in flight.  The
 * first client of each document connects before the others do: two
 * simultaneous first connections to a new room can hang pycrdt-websocket
 * 0.16 (its room start is not single-flight), and the bench measures
 * traffic, not that race.
 */
async function connectAll (clients, concurrency = 64, timeoutMs = TIMEOUT_MS) {
  const firsts = new Map()
  for (const c of clients) if (!firsts.has(c.url)) firsts.set(c.url, c)
  const rest = clients.filter(c => firsts.get(c.url) !== c)
  for (const batch of [[...firsts.values()], rest]) {
    let next = 0
    const worker = async () => {
      while (next < batch.length) await batch[next++].connect(timeoutMs)
    }
    await Promise.all(Array.from({ length: Math.min(concurrency, batch.length) }, worker))
  }
}

async function closeAll (clients, timeoutMs = 10000) {
  for (const c of clients) c.close()
  await Promise.race([Promise.all(clients.map(c => c.closed())), sleep(timeoutMs)])
}

/**
 * Client WebSocket frames (FIN, binary, zero mask) around Yjs messages, as
 * one buffer: written with one socket write, they cost the generator
 * nothing per frame while the server still reads one message per insert.
 */
function wsFrames (messages) {
  const parts = []
  for (const m of messages) {
    const n = m.length
    const head = n < 126
      ? [0x82, 0x80 | n]
      : n < 65536 ? [0x82, 0x80 | 126, n >> 8, n & 0xff] : null
    if (head === null) throw new Error('wsFrames: message too large')
    parts.push(Buffer.from([...head, 0, 0, 0, 0]), m)
  }
  return Buffer.concat(parts)
}

/** Send frames as fast as the socket takes them, never buffering more than ``window`` bytes. */
async function sendAll (client, frames, window = 4 * 1024 * 1024) {
  for (const f of frames) {
    client.send(f)
    if (client.ws.bufferedAmount > window) {
      while (client.ws.bufferedAmount > window / 2) await sleep(1)
    }
  }
}

/** Resolve once check() is true, polling on every tick; reject after timeoutMs. */
async function until (check, timeoutMs, what) {
  const deadline = performance.now() + timeoutMs
  while (!check()) {
    if (performance.now() > deadline) throw new Failure(`timed out after ${timeoutMs / 1000}s waiting for ${what()}`)
    await sleep(1)
  }
}

/** Seen-markers bookkeeping for one reader. */
class Seen {
  constructor (writers, perWriter) {
    this.perWriter = perWriter
    this.bits = new Uint8Array(writers * perWriter)
    this.count = 0
  }

  add (w, s) {
    if (s >= this.perWriter) return false
    const i = w * this.perWriter + s
    if (i >= this.bits.length || this.bits[i]) return false
    this.bits[i] = 1
    this.count++
    return true
  }
}

function checkUnexpectedCloses (clients) {
  const bad = clients.filter(c => c.closedUnexpectedly)
  if (bad.length) throw new Failure(`${bad.length} clients closed by the server (${bad[0].closedUnexpectedly})`)
}

/** Yjs updates of a scratch doc that one writer would send, and the text they make. */
function scripted (clientID, edits) {
  const doc = new Y.Doc()
  doc.clientID = clientID
  const text = doc.getText('text')
  const frames = []
  doc.on('update', u => frames.push(updateFrame(u)))
  edits(text)
  return { frames, text: text.toString(), doc }
}

function countMarkers (text) {
  return (text.match(/\{\d+\.\d+\}/g) || []).length
}

// -- scenarios ---------------------------------------------------------------

const scenarios = {}

/** S1 fan-out: 1 writer, many readers, inserts as fast as the server takes them. */
scenarios.s1 = async (cfg) => {
  const url = cfg.url + `s1-${cfg.tag}`
  const { readers: nReaders, full_readers: nFull, inserts } = cfg
  const script = scripted(1, text => {
    for (let i = 0; i < inserts; i++) text.insert(text.length, marker(0, i) + ' ')
  })
  let done = 0
  const readers = []
  for (let r = 0; r < nReaders; r++) {
    const seen = new Seen(1, inserts)
    const full = r < nFull
    const reader = new Client(url, {
      doc: full ? new Y.Doc() : null,
      onPayload: (p) => scanMarkers(p, (w, s) => {
        if (w === 0 && seen.add(w, s) && seen.count === inserts) done++
      })
    })
    reader.seen = seen
    readers.push(reader)
  }
  await connectAll(readers)
  const writer = new Client(url)
  await writer.connect()
  const burst = wsFrames(script.frames)
  const phase = new Phase(cfg.server_pid)
  writer.ws._socket.write(burst)
  await until(() => done === nReaders, cfg.timeout_ms, () =>
    `readers: ${done}/${nReaders} complete, least ${Math.min(...readers.map(r => r.seen.count))}/${inserts}`)
  const m = phase.stop()
  checkUnexpectedCloses([...readers, writer])
  for (const r of readers.slice(0, nFull)) {
    const got = r.doc.getText('text').toString()
    if (got !== script.text) throw new Failure(`full reader's text differs (${got.length} vs ${script.text.length} chars)`)
  }
  await closeAll([...readers, writer])
  return {
    metrics: {
      deliveries_per_s: nReaders * inserts / m.seconds,
      converge_s: m.seconds
    },
    phase: m
  }
}

/**
 * S2 concurrent writers at random positions: time until every client has
 * every edit.  A writer inserts at a random position of its own inserts
 * (kept in a private doc): inserting by index into the whole shared text
 * costs Yjs ~0.5 ms at 10,000 items, which would make the generator the
 * bottleneck.  The server's work is the same: it integrates each item by
 * its origin, wherever that is.  Full readers apply everything and must
 * end with the same text.
 */
scenarios.s2 = async (cfg) => {
  const url = cfg.url + `s2-${cfg.tag}`
  const { writers: nWriters, inserts, full_readers: nFull } = cfg
  let done = 0
  const clients = []
  for (let k = 0; k < nWriters + nFull; k++) {
    const w = k < nWriters ? k : -1
    const expected = (w >= 0 ? nWriters - 1 : nWriters) * inserts
    const seen = new Seen(nWriters, inserts)
    const c = new Client(url, {
      doc: w < 0 ? new Y.Doc() : null,
      onPayload: (p) => scanMarkers(p, (ww, s) => {
        if (ww !== w && ww < nWriters && seen.add(ww, s) && seen.count === expected) done++
      })
    })
    c.seen = seen
    c.expected = expected
    clients.push(c)
  }
  await connectAll(clients)
  const writers = clients.slice(0, nWriters)
  let rng = 12345
  const random = () => { rng = (rng * 1103515245 + 12345) & 0x7fffffff; return rng / 0x80000000 }
  // Made before the clock starts: the timed phase only sends.
  const scripts = writers.map((_, w) => scripted(100 + w, text => {
    for (let i = 0; i < inserts; i++) text.insert(Math.floor(random() * (text.length + 1)), marker(w, i))
  }))
  const phase = new Phase(cfg.server_pid)
  // Round-robin one insert per writer, yielding to the sockets between rounds.
  for (let i = 0; i < inserts; i++) {
    for (let w = 0; w < nWriters; w++) writers[w].send(scripts[w].frames[i])
    await tick()
  }
  await until(() => done === clients.length, cfg.timeout_ms, () =>
    `clients: ${done}/${clients.length} complete, least ${Math.min(...clients.map(c => c.seen.count - c.expected))}`)
  const m = phase.stop()
  checkUnexpectedCloses(clients)
  const texts = clients.filter(c => c.doc).map(c => c.doc.getText('text').toString())
  if (texts.some(t => t !== texts[0])) throw new Failure('full readers ended with different texts')
  // Inserts land inside each other's markers, so count characters, not markers.
  let want = 0
  for (let w = 0; w < nWriters; w++) for (let i = 0; i < inserts; i++) want += marker(w, i).length
  if (texts.length && texts[0].length !== want) throw new Failure(`text holds ${texts[0].length} of ${want} characters`)
  await closeAll(clients)
  return { metrics: { converge_s: m.seconds }, phase: m }
}

/** S3 steady latency: docs x clients, each sending ``rate`` updates/s. */
scenarios.s3 = async (cfg) => {
  const { docs, clients_per_doc: perDoc, rate, seconds, full_docs: fullDocs } = cfg
  const sends = Math.round(rate * seconds)
  const nClients = docs * perDoc
  const sendTimes = new Float64Array(nClients * sends)
  const latencies = new Float64Array(nClients * (perDoc - 1) * sends)
  let nLat = 0
  let done = 0
  const expected = (perDoc - 1) * sends
  const clients = []
  for (let d = 0; d < docs; d++) {
    const url = cfg.url + `s3-${cfg.tag}-${d}`
    for (let k = 0; k < perDoc; k++) {
      const me = d * perDoc + k
      const seen = new Seen(nClients, sends)
      const full = k === 0 && d < fullDocs
      const c = new Client(url, {
        doc: full ? new Y.Doc() : null,
        onPayload: (p) => {
          const now = performance.now()
          scanMarkers(p, (w, s) => {
            if (w === me || Math.floor(w / perDoc) !== d || !seen.add(w, s)) return
            latencies[nLat++] = now - sendTimes[w * sends + s]
            if (seen.count === expected) done++
          })
        }
      })
      c.me = me
      c.seen = seen
      if (!full) {
        // A private doc holding only our own inserts makes valid updates
        // without applying anyone else's.
        c.scratch = new Y.Doc()
        c.scratch.clientID = 1000 + me
        c.scratch.on('update', u => { c.pending = updateFrame(u) })
      }
      clients.push(c)
    }
  }
  await connectAll(clients)
  const phase = new Phase(cfg.server_pid)
  const period = 1000 / rate
  const start = performance.now() + 50
  await Promise.all(clients.map(async (c) => {
    const offset = Math.random() * period
    for (let s = 0; s < sends; s++) {
      const due = start + offset + s * period
      const wait = due - performance.now()
      if (wait > 0) await sleep(wait)
      if (c.doc) {
        sendTimes[c.me * sends + s] = performance.now()
        c.edit(text => text.insert(text.length, marker(c.me, s)))
      } else {
        const text = c.scratch.getText('text')
        text.insert(text.length, marker(c.me, s))
        sendTimes[c.me * sends + s] = performance.now()
        c.send(c.pending)
      }
    }
  }))
  await until(() => done === nClients, cfg.timeout_ms, () =>
    `clients: ${done}/${nClients} complete, least ${Math.min(...clients.map(c => c.seen.count))}/${expected}`)
  const m = phase.stop()
  checkUnexpectedCloses(clients)
  for (const c of clients.filter(c => c.doc)) {
    const n = countMarkers(c.doc.getText('text').toString())
    if (n !== perDoc * sends) throw new Failure(`full client's text holds ${n} of ${perDoc * sends} inserts`)
  }
  const sorted = latencies.subarray(0, nLat).sort()
  await closeAll(clients)
  return {
    metrics: {
      p50_ms: percentile(sorted, 0.5),
      p99_ms: percentile(sorted, 0.99),
      max_ms: sorted[sorted.length - 1],
      samples: nLat
    },
    phase: m
  }
}

/** S4 late joiners: a big document, then 1 and N joiners; then a 20 MB one. */
scenarios.s4 = async (cfg) => {
  const { updates, joiners, full_joiners: nFull, big_mb: bigMb, big_joiners: bigJoiners, single_joins: singleJoins } = cfg
  const url = cfg.url + `s4-${cfg.tag}`
  let rng = 777
  const random = () => { rng = (rng * 1103515245 + 12345) & 0x7fffffff; return rng / 0x80000000 }
  const letters = 'abcdefghijklmnopqrstuvwxyz'
  const script = scripted(7, text => {
    for (let i = 0; i < updates; i++) text.insert(Math.floor(random() * (text.length + 1)), letters[i % 26])
  })
  // Build: single-character updates as fast as the server takes them.
  const writer = new Client(url)
  await writer.connect()
  const build = new Phase(cfg.server_pid)
  await sendAll(writer, script.frames)
  const reference = await fullState(writer, cfg.timeout_ms)
  const built = build.stop()
  checkText(reference, script.text, 'the built document')

  // One joiner, a few times: the median.
  const singles = []
  let refLength = 0
  const single = { seconds: 0, gen: 0, server: 0 }
  {
    // A full joiner, untimed, checks the text and the size of the sync.
    const j = new Client(url, { doc: new Y.Doc(), deferApply: true })
    await j.connect(cfg.timeout_ms)
    checkText(j.text(), script.text, 'a joiner')
    refLength = j.syncBytes
    await closeAll([j])
  }
  for (let i = 0; i < singleJoins; i++) {
    const j = new RawJoiner(url)
    const ph = new Phase(cfg.server_pid)
    await j.connect(cfg.timeout_ms)
    const one = ph.stop()
    if (j.step2Length !== refLength) throw new Failure(`a joiner got ${j.step2Length} bytes, expected ${refLength}`)
    singles.push(j.syncedAt - ph.t0)
    single.seconds += one.seconds
    single.gen += one.gen_cpu * one.seconds
    single.server += one.server_cpu * one.seconds
    j.close()
  }
  singles.sort((a, b) => a - b)

  // N joiners at once: all light but nFull, which must hold the text.
  // The light ones count bytes on a bare socket (a ws handshake costs the
  // generator ~1 ms of CPU: 50 of them would time the generator).
  const many = Array.from({ length: joiners }, (_, i) => i < nFull
    ? new Client(url, { doc: new Y.Doc(), deferApply: true })
    : new RawJoiner(url))
  const phase = new Phase(cfg.server_pid)
  await Promise.all(many.map(c => c.connect(cfg.timeout_ms)))
  const m = phase.stop()
  const joinN = Math.max(...many.map(c => c.syncedAt)) - phase.t0
  for (const c of many.slice(0, nFull)) checkText(c.text(), script.text, 'a joiner')
  const wrong = many.slice(nFull).filter(c => c.step2Length !== refLength)
  if (wrong.length) throw new Failure(`${wrong.length} joiners got ${wrong[0].step2Length} bytes, expected ${refLength}`)
  checkUnexpectedCloses([writer, ...many])
  await closeAll([writer, ...many])

  // A 20 MB document (1 MiB inserts) and a crowd joining it at once.
  const bigUrl = cfg.url + `s4big-${cfg.tag}`
  const chunk = 1024 * 1024
  const bigScript = scripted(9, text => {
    for (let i = 0; i < bigMb; i++) text.insert(text.length, letters[i % 26].repeat(chunk - 8) + marker(9, i).padEnd(8, '.'))
  })
  const bigWriter = new Client(bigUrl)
  await bigWriter.connect()
  await sendAll(bigWriter, bigScript.frames)
  const bigRef = await fullState(bigWriter, cfg.timeout_ms)
  if (bigRef.length !== bigScript.text.length) throw new Failure(`20 MB document holds ${bigRef.length} chars`)
  const crowd = Array.from({ length: bigJoiners }, (_, i) => i > 0
    ? new RawJoiner(bigUrl)
    : new Client(bigUrl, { doc: new Y.Doc(), deferApply: true }))
  const bigPhase = new Phase(cfg.server_pid)
  await Promise.all(crowd.map(c => c.connect(cfg.timeout_ms)))
  const bm = bigPhase.stop()
  const bigSeconds = (Math.max(...crowd.map(c => c.syncedAt)) - bigPhase.t0) / 1000
  const bigStep2 = crowd[0].syncBytes
  const bigText = crowd[0].text()
  checkText(bigText, bigScript.text, 'a 20 MB joiner')
  if (countMarkers(bigText) !== bigMb) throw new Failure('the 20 MB joiner missed part of the document')
  const short = crowd.slice(1).filter(c => c.step2Length !== bigStep2)
  if (short.length) throw new Failure(`${short.length} joiners got ${short[0].step2Length} bytes, not ${bigStep2}`)
  checkUnexpectedCloses([bigWriter, ...crowd])
  await closeAll([bigWriter, ...crowd])
  return {
    metrics: {
      build_updates_per_s: updates / built.seconds,
      join1_ms: singles[Math.floor(singles.length / 2)],
      joinN_ms: joinN,
      big_joins_per_s: bigJoiners / bigSeconds,
      doc_bytes: refLength
    },
    phase: m,
    phases: {
      build: built,
      big: bm,
      single: { seconds: single.seconds, gen_cpu: single.gen / single.seconds, server_cpu: single.server / single.seconds }
    }
  }
}

/**
 * S7 big document (issue #16): build a document from many appended pastes
 * (time), storms of joiners at once on it (joins/s: the first storm, right
 * after the build, and later ones; the server's peak RSS meanwhile), then
 * typing at the end of another big document (keystrokes/s the server takes,
 * and the latency to a reader at a steady pace).
 */
scenarios.s7 = async (cfg) => {
  const { pastes, paste_kb: pasteKb, joiners, storms, typing_mb: typingMb, keystrokes, pace } = cfg
  const url = cfg.url + `s7-${cfg.tag}`
  const letters = 'abcdefghijklmnopqrstuvwxyz'
  const paste = pasteKb * 1024
  const script = scripted(11, text => {
    for (let i = 0; i < pastes; i++) {
      text.insert(text.length, letters[i % 26].repeat(paste - 16) + marker(11, i).padEnd(15, '.') + '\n')
    }
  })
  // Build: every paste appended, as fast as the server takes them.
  const writer = new Client(url)
  await writer.connect()
  const build = new Phase(cfg.server_pid)
  await sendAll(writer, script.frames)
  const reference = await fullState(writer, cfg.timeout_ms)
  const built = build.stop()
  checkText(reference, script.text, 'the built document')

  // Storms of joiners at once: one full client checks the text, the rest count bytes.
  const stormRates = []
  let peakRss = 0
  let stormPhase = null
  for (let s = 0; s < storms; s++) {
    const crowd = Array.from({ length: joiners }, (_, i) => i > 0
      ? new RawJoiner(url)
      : new Client(url, { doc: new Y.Doc(), deferApply: true }))
    let sampling = true
    const sampler = (async () => {
      while (sampling) {
        peakRss = Math.max(peakRss, serverStat(cfg.server_pid).rss)
        await sleep(10)
      }
    })()
    const phase = new Phase(cfg.server_pid)
    await Promise.all(crowd.map(c => c.connect(cfg.timeout_ms)))
    const p = phase.stop()
    sampling = false
    await sampler
    if (s === 0) stormPhase = p
    stormRates.push(joiners / ((Math.max(...crowd.map(c => c.syncedAt)) - phase.t0) / 1000))
    checkText(crowd[0].text(), script.text, 'a joiner of the big document')
    const size = crowd[0].syncBytes
    const short = crowd.slice(1).filter(c => c.step2Length !== size)
    if (short.length) throw new Failure(`${short.length} joiners got ${short[0].step2Length} bytes, not ${size}`)
    checkUnexpectedCloses(crowd)
    await closeAll(crowd)
  }
  checkUnexpectedCloses([writer])
  await closeAll([writer])

  // Typing at the end of a big document: a typist and a reader.
  const typingUrl = cfg.url + `s7type-${cfg.tag}`
  const base = scripted(12, text => {
    const line = 'typing at the end of a big document, line after line.\n'
    const block = line.repeat(Math.ceil(64 * 1024 / line.length))
    for (let n = 0; n < typingMb * 1024 * 1024; n += block.length) text.insert(text.length, block)
  })
  // Keystrokes encoded beforehand: the generator's CPU goes to sending them.
  const paced = Math.min(keystrokes, Math.max(50, Math.round(pace * 4)))
  const typing = new Y.Doc()
  typing.clientID = 13
  Y.applyUpdate(typing, Y.encodeStateAsUpdate(base.doc))
  const keyFrames = []
  typing.on('update', u => keyFrames.push(updateFrame(u)))
  const typed = typing.getText('text')
  for (let i = 0; i < keystrokes + paced; i++) typed.insert(typed.length, letters[i % 26])
  const typist = new Client(typingUrl)
  await typist.connect()
  await sendAll(typist, base.frames)
  const reader = new Client(typingUrl, { doc: new Y.Doc() })
  await reader.connect()
  const startLength = base.text.length
  await until(() => reader.doc.getText('text').length >= startLength, cfg.timeout_ms, () => 'the reader to get the document')
  const readerText = reader.doc.getText('text')
  const arrived = []
  readerText.observe(() => { arrived.push([readerText.length, performance.now()]) })
  // As fast as the server takes them.
  const burst = new Phase(cfg.server_pid)
  await sendAll(typist, keyFrames.slice(0, keystrokes), 1024 * 1024)
  await until(() => readerText.length >= startLength + keystrokes, cfg.timeout_ms, () => `${keystrokes} keystrokes at the reader`)
  const burstPhase = burst.stop()
  // At a steady pace: the latency from the typist to the reader.
  arrived.length = 0
  const sentAt = []
  const from = readerText.length
  for (let i = 0; i < paced; i++) {
    sentAt.push(performance.now())
    typist.send(keyFrames[keystrokes + i])
    await sleep(1000 / pace)
  }
  await until(() => readerText.length >= from + paced, cfg.timeout_ms, () => 'the paced keystrokes at the reader')
  const latencies = []
  let k = 0
  for (const [length, at] of arrived) {
    while (k < paced && from + k + 1 <= length) latencies.push(at - sentAt[k++])
  }
  latencies.sort((a, b) => a - b)
  checkUnexpectedCloses([typist, reader])
  await closeAll([typist, reader])
  return {
    metrics: {
      build_s: built.seconds,
      storm1_joins_per_s: stormRates[0],
      stormN_joins_per_s: stormRates.length > 1 ? percentile(stormRates.slice(1).sort((a, b) => a - b), 0.5) : stormRates[0],
      peak_rss_mb: peakRss / (1024 * 1024),
      keystrokes_per_s: keystrokes / burstPhase.seconds,
      typing_p99_ms: percentile(latencies, 0.99),
      doc_bytes: reference.length
    },
    phase: stormPhase,
    phases: { build: built, typing: burstPhase }
  }
}

/**
 * Ask for the whole document on an open connection; its step 2 comes after
 * everything sent before (a collab server may send it in pieces: sync
 * updates, the last one a step 2).
 */
function fullState (client, timeoutMs) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Failure('no full state from the server')), timeoutMs)
    const ws = client.ws
    const pieces = []
    const onMessage = (buf) => {
      const msg = parseSync(buf)
      if (msg === null || msg.kind === 0) return
      pieces.push(msg.payload)
      if (msg.kind !== 1) return
      ws.off('message', onMessage)
      clearTimeout(timer)
      const doc = new Y.Doc()
      for (const piece of pieces) Y.applyUpdate(doc, piece)
      resolve(doc.getText('text').toString())
    }
    ws.on('message', onMessage)
    ws.send(EMPTY_STEP1)
  })
}

function checkText (got, want, who) {
  if (got !== want) throw new Failure(`${who} has ${got.length} chars, expected ${want.length} (or the text differs)`)
}

/** S5 idle memory: server RSS per idle connection, and after they all leave. */
scenarios.s5 = async (cfg) => {
  const { connections, docs, settle_ms: settleMs } = cfg
  // Warm up the code paths so the baseline is not the cold process.
  const warm = Array.from({ length: 20 }, (_, i) => new Client(cfg.url + `s5warm-${cfg.tag}-${i % 2}`))
  await connectAll(warm)
  warm[0].send(scripted(3, t => t.insert(0, 'warm')).frames[0])
  await sleep(200)
  await closeAll(warm)
  await sleep(settleMs)
  const before = serverStat(cfg.server_pid).rss
  const phase = new Phase(cfg.server_pid)
  const clients = []
  for (let i = 0; i < connections; i++) {
    const d = i % docs
    clients.push(new Client(cfg.url + `s5-${cfg.tag}-${d}`))
  }
  await connectAll(clients, 64)
  // One small edit per document, so every room holds some text.
  for (let d = 0; d < docs; d++) {
    const s = scripted(100 + d, t => t.insert(0, marker(d, 0) + ' idle document '.repeat(6)))
    clients[d].send(s.frames[0])
  }
  await sleep(settleMs)
  const connected = serverStat(cfg.server_pid).rss
  const m = phase.stop()
  checkUnexpectedCloses(clients)
  await closeAll(clients)
  await sleep(settleMs * 2)
  const after = serverStat(cfg.server_pid).rss
  return {
    metrics: {
      bytes_per_conn: (connected - before) / connections,
      rss_before_mb: before / 2 ** 20,
      rss_connected_mb: connected / 2 ** 20,
      rss_after_mb: after / 2 ** 20,
      after_vs_before: after / before
    },
    phase: m
  }
}

/** S6 scale: many connections over many docs, light traffic; all must converge. */
scenarios.s6 = async (cfg) => {
  const { connections, docs, writes, full_docs: fullDocs } = cfg
  const perDoc = Math.ceil(connections / docs)
  let done = 0
  const clients = []
  const readers = []
  for (let i = 0; i < connections; i++) {
    const d = i % docs
    const k = Math.floor(i / docs)
    const url = cfg.url + `s6-${cfg.tag}-${d}`
    if (k === 0) {
      clients.push(new Client(url)) // the doc's writer
      continue
    }
    const seen = new Seen(1, writes)
    const c = new Client(url, {
      doc: k === 1 && d < fullDocs ? new Y.Doc() : null,
      onPayload: (p) => scanMarkers(p, (w, s) => {
        if (w === d && seen.add(0, s) && seen.count === writes) done++
      })
    })
    c.seen = seen
    c.d = d
    clients.push(c)
    readers.push(c)
  }
  const connect = new Phase(cfg.server_pid)
  await connectAll(clients, 64, cfg.timeout_ms)
  const connected = connect.stop()
  const scripts = Array.from({ length: docs }, (_, d) => scripted(10 + d, t => {
    for (let s = 0; s < writes; s++) t.insert(t.length, marker(d, s) + ' ')
  }))
  const phase = new Phase(cfg.server_pid)
  for (let s = 0; s < writes; s++) {
    for (let d = 0; d < docs; d++) clients[d].send(scripts[d].frames[s])
    await tick()
  }
  await until(() => done === readers.length, cfg.timeout_ms, () =>
    `readers: ${done}/${readers.length} complete`)
  const m = phase.stop()
  checkUnexpectedCloses(clients)
  for (const c of readers.filter(c => c.doc)) checkText(c.doc.getText('text').toString(), scripts[c.d].text, 'a full reader')
  await closeAll(clients, 30000)
  return {
    metrics: {
      connect_s: connected.seconds,
      converge_s: m.seconds,
      server_rss_mb: connected.server_rss / 2 ** 20,
      per_doc: perDoc
    },
    phase: m,
    phases: { connect: connected }
  }
}

// -- main --------------------------------------------------------------------

async function main () {
  const cfg = JSON.parse(process.argv[2])
  cfg.tag = cfg.tag || Math.random().toString(36).slice(2, 8)
  cfg.timeout_ms = cfg.timeout_ms || 120000
  TIMEOUT_MS = cfg.timeout_ms
  SERVER_TREE = Boolean(cfg.server_tree)
  const run = scenarios[cfg.scenario]
  if (!run) throw new Error(`unknown scenario ${cfg.scenario}`)
  const started = performance.now()
  let result
  try {
    result = { ok: true, ...(await run(cfg)) }
  } catch (err) {
    if (!(err instanceof Failure)) log(err.stack)
    result = { ok: false, error: err.message }
  }
  result.wall_s = (performance.now() - started) / 1000
  process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(0))
}

main()
