// A scripted HTTP server speaking the transport's side of the contract, so
// the client's ladder, batching and error mapping can be driven into each
// case on purpose (buffered streams, dropped requests, refusals).  The real
// collab server is exercised by the repository's pytest suite.

import { createHash } from 'node:crypto'
import { createServer } from 'node:http'

import { decodeFrames, encodeFrames, toBase64 } from '../src/wire.js'

/**
 * @param {object} [script]
 * @param {'refuse'|'accept'} [script.websocket] what an Upgrade gets
 * @param {'normal'|'buffered'|'silent'} [script.sse] buffered: headers but no open event; silent: open, then nothing
 * @param {(req: any) => [number, any] | null} [script.refuse] answer a stream/poll/send request with this status and JSON
 * @param {(frames: Uint8Array[]) => Uint8Array[]} [script.reply] a POST's reply frames
 * @param {number} [script.heartbeatMs]
 * @param {number} [script.pollHold] how long a poll waits for frames, ms
 */
export async function startServer (script = {}) {
  const state = {
    requests: [], // {method, path, query, headers}
    posts: [], // {sid, seq, frames}
    goodbyes: [], // {sid, frames}: POSTs with close=1
    upgrades: 0,
    sessions: new Map(),
    sockets: new Set(),
    holdPost: null, // a promise a POST waits on before answering
    holdGoodbye: null, // the same for a goodbye (close=1)
    dropNextPost: false,
    dropStreamAfter: 0 // end the SSE response abruptly after this many frames (once)
  }
  let nextSid = 1

  const session = () => {
    const s = { sid: `s${nextSid++}`, frames: [], streams: new Set(), waiters: new Set(), closed: null }
    state.sessions.set(s.sid, s)
    return s
  }

  const writeFrame = (res, n, bytes) => res.write(`id: ${n}\ndata: ${toBase64(bytes)}\n\n`)

  const server = createServer(async (req, res) => {
    const url = new URL(req.url, 'http://x')
    const query = Object.fromEntries(url.searchParams)
    const kind = url.pathname.split('/')[1]
    state.requests.push({ method: req.method, kind, path: url.pathname, query, headers: req.headers })
    const refusal = script.refuse && script.refuse({ method: req.method, kind, query })
    if (refusal) {
      const [status, body] = refusal
      const text = typeof body === 'string' ? body : JSON.stringify(body)
      res.writeHead(status, { 'Content-Type': typeof body === 'string' ? 'text/html' : 'application/json' })
      res.end(text)
      return
    }
    if (kind === 'transport') {
      res.writeHead(200, { 'Content-Type': 'application/json' })
      res.end(JSON.stringify({ ok: true, transports: ['websocket', 'sse', 'poll'] }))
    } else if (kind === 'sse') {
      res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache, no-transform' })
      res.flushHeaders()
      if (script.sse === 'buffered') return // a proxy holding everything back
      let s = query.sid ? state.sessions.get(query.sid) : null
      if (query.sid && !s) {
        res.end('event: close\ndata: {"code": 4410, "reason": "session expired"}\n\n')
        return
      }
      if (!s) {
        s = session()
        res.write(`event: open\ndata: ${JSON.stringify({ sid: s.sid, heartbeat_ms: script.heartbeatMs ?? 10000, post_max: 1 << 20 })}\n\n`)
      }
      if (script.sse === 'silent') return
      const after = Number(query.last || 0)
      for (const [n, bytes] of s.frames) if (n > after) writeFrame(res, n, bytes)
      const stream = { res, budget: state.dropStreamAfter }
      state.dropStreamAfter = 0
      s.streams.add(stream)
      res.on('close', () => s.streams.delete(stream))
    } else if (kind === 'poll') {
      let s = query.sid ? state.sessions.get(query.sid) : null
      const answer = (body) => {
        res.writeHead(200, { 'Content-Type': 'application/json' })
        res.end(JSON.stringify(body))
      }
      if (query.sid && !s) return answer({ sid: query.sid, frames: [], close: { code: 4410, reason: 'session expired' } })
      if (!s) {
        s = session()
        return answer({ sid: s.sid, frames: [], close: null, heartbeat_ms: 10000, post_max: 1 << 20 })
      }
      const after = Number(query.after || 0)
      s.frames = s.frames.filter(([n]) => n > after) // acknowledged
      const reply = () => answer({ sid: s.sid, frames: s.frames.map(([n, b]) => [n, toBase64(b)]), close: s.closed })
      if (s.frames.length || s.closed) return reply()
      const waiter = () => { clearTimeout(timer); s.waiters.delete(waiter); reply() }
      const timer = setTimeout(waiter, script.pollHold ?? 25000)
      s.waiters.add(waiter)
      res.on('close', () => { clearTimeout(timer); s.waiters.delete(waiter) })
    } else if (kind === 'send') {
      const chunks = []
      for await (const chunk of req) chunks.push(chunk)
      const frames = decodeFrames(new Uint8Array(Buffer.concat(chunks)))
      if (query.close === '1') {
        if (state.holdGoodbye) await state.holdGoodbye
        state.goodbyes.push({ sid: query.sid, frames })
        res.writeHead(200, { 'Content-Type': 'application/octet-stream' }).end()
        return
      }
      state.posts.push({ sid: query.sid, seq: Number(req.headers['collab-seq']), frames })
      if (state.dropNextPost) {
        state.dropNextPost = false
        req.socket.destroy() // read, maybe applied, never answered
        return
      }
      if (state.holdPost) await state.holdPost
      res.writeHead(200, { 'Content-Type': 'application/octet-stream' })
      res.end(encodeFrames(script.reply ? script.reply(frames) : []))
    } else {
      res.writeHead(404).end()
    }
  })

  server.on('connection', (socket) => {
    state.sockets.add(socket)
    socket.on('close', () => state.sockets.delete(socket))
  })
  server.on('upgrade', (req, socket) => {
    state.upgrades += 1
    if ((script.websocket ?? 'refuse') === 'refuse') {
      socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n')
      return
    }
    const accept = createHash('sha1').update(req.headers['sec-websocket-key'] + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64')
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`)
    socket.write(Buffer.from([0x82, 3, 0, 0, 1])) // one binary frame: a sync step 1 of an empty doc
    socket.on('error', () => {})
    socket.on('data', () => {})
  })

  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = server.address().port

  return {
    state,
    port,
    url: (doc = 'notes') => `ws://127.0.0.1:${port}/ws/${doc}`,
    /** A frame for every session, as the server's room would broadcast it. */
    push (bytes) {
      for (const s of state.sessions.values()) {
        const n = (s.last = (s.last || 0) + 1)
        s.frames.push([n, bytes])
        for (const stream of s.streams) {
          writeFrame(stream.res, n, bytes)
          if (stream.budget && --stream.budget === 0) stream.res.socket.end() // cut mid-response: no last chunk
        }
        for (const waiter of [...s.waiters]) waiter()
      }
    },
    /** End every session with a close event. */
    end (code, reason = '') {
      for (const s of state.sessions.values()) {
        s.closed = { code, reason }
        for (const stream of s.streams) stream.res.end(`event: close\ndata: ${JSON.stringify(s.closed)}\n\n`)
        for (const waiter of [...s.waiters]) waiter()
      }
    },
    set websocket (mode) { script.websocket = mode },
    async close () {
      for (const socket of state.sockets) socket.destroy()
      await new Promise((resolve) => server.close(resolve))
    }
  }
}
