import assert from 'node:assert/strict'
import { afterEach, test } from 'node:test'

import { UPGRADE_REASON, createTransport, rememberedTier } from '../src/index.js'
import { startServer } from './server.js'

// Node 20 has a WebSocket only with --experimental-websocket (package.json's
// test script passes it); without one the ladder starts at the stream.
const hasWebSocket = typeof globalThis.WebSocket === 'function'

const servers = []
const sockets = []
afterEach(async () => {
  for (const socket of sockets.splice(0)) if (socket.readyState < 2) socket.close()
  for (const server of servers.splice(0)) await server.close()
})

async function serve (script) {
  const server = await startServer(script)
  servers.push(server)
  return server
}

/** A fresh storage per test: what one test remembers does not steer another. */
function memory () {
  const map = new Map()
  return { getItem: (k) => map.get(k) ?? null, setItem: (k, v) => map.set(k, v), removeItem: (k) => map.delete(k) }
}

/** Open a transport and record what it reports, as y-websocket would see it. */
function open (Transport, url) {
  const socket = new Transport(url)
  sockets.push(socket)
  socket.binaryType = 'arraybuffer'
  const seen = { transports: [], messages: [], errors: 0, close: null }
  socket.addEventListener('transport', (e) => seen.transports.push(e.transport))
  socket.onmessage = (e) => seen.messages.push([...new Uint8Array(e.data)])
  socket.onerror = () => { seen.errors += 1 }
  const closed = new Promise((resolve) => {
    socket.onclose = (e) => {
      seen.close = { code: e.code, reason: e.reason, wasClean: e.wasClean }
      resolve(seen.close)
    }
  })
  const opened = new Promise((resolve, reject) => {
    socket.onopen = () => resolve()
    closed.then((c) => reject(new Error(`closed before open: ${JSON.stringify(c)}`)))
  })
  opened.catch(() => {}) // awaited by the tests that expect an open
  return { socket, seen, opened, closed }
}

async function until (predicate, what, timeout = 5000) {
  const start = Date.now()
  while (!predicate()) {
    if (Date.now() - start > timeout) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

test('a refused WebSocket steps down to SSE and behaves like an open socket', async () => {
  const server = await serve({ reply: (frames) => frames.map((f) => Uint8Array.of(9, ...f)) })
  const Transport = createTransport({ storage: memory() })
  const { socket, seen, opened } = open(Transport, server.url())
  assert.equal(socket.readyState, socket.CONNECTING)
  await opened
  assert.equal(socket.readyState, Transport.OPEN)
  assert.equal(socket.transport, 'sse')
  assert.deepEqual(seen.transports, ['sse'])
  assert.equal(server.state.upgrades, hasWebSocket ? 1 : 0)
  assert.equal(server.state.requests.some((r) => r.kind === 'transport'), hasWebSocket, 'the probe follows a failed WebSocket')

  server.push(Uint8Array.of(1, 1, 0))
  server.push(Uint8Array.of(0, 2, 5))
  await until(() => seen.messages.length === 2, 'two frames')
  assert.deepEqual(seen.messages, [[1, 1, 0], [0, 2, 5]])

  // Frames sent in one turn go in one POST; its reply frames arrive as messages.
  socket.send(Uint8Array.of(0, 0, 1))
  socket.send(new Uint8Array([1, 7]).buffer)
  await until(() => seen.messages.length === 4, 'the replies')
  assert.deepEqual(server.state.posts, [{ sid: socket.sid, seq: 1, frames: [Uint8Array.of(0, 0, 1), Uint8Array.of(1, 7)] }])
  assert.deepEqual(seen.messages.slice(2), [[9, 0, 0, 1], [9, 1, 7]])
  assert.equal(rememberedTier(server.url(), Transport.config), 'sse')
})

test('only one POST is in flight: frames sent meanwhile go in the next one', async () => {
  const server = await serve()
  const { socket, opened } = open(createTransport({ storage: memory(), tiers: ['sse'] }), server.url())
  await opened
  let release
  server.state.holdPost = new Promise((resolve) => { release = resolve })
  socket.send(Uint8Array.of(1))
  await until(() => server.state.posts.length === 1, 'the first POST')
  socket.send(Uint8Array.of(2))
  socket.send(Uint8Array.of(3))
  await new Promise((resolve) => setTimeout(resolve, 100))
  assert.equal(server.state.posts.length, 1, 'a second POST went out while the first was pending')
  assert.equal(socket.bufferedAmount, 3)
  server.state.holdPost = null
  release()
  await until(() => server.state.posts.length === 2, 'the second POST')
  assert.deepEqual(server.state.posts.map((p) => [p.seq, p.frames.map((f) => f[0])]), [[1, [1]], [2, [2, 3]]])
  await until(() => socket.bufferedAmount === 0, 'the buffer drained')
})

test('a stream whose open event is held back is replaced by long-poll, which is remembered', async () => {
  const server = await serve({ sse: 'buffered', pollHold: 300 })
  const storage = memory()
  const Transport = createTransport({ storage, openTimeout: 300 })
  const started = Date.now()
  const { socket, seen, opened } = open(Transport, server.url())
  await opened
  assert.ok(Date.now() - started < 3000)
  assert.deepEqual(seen.transports, ['sse', 'poll'])
  assert.equal(socket.transport, 'poll')

  server.push(Uint8Array.of(0, 1, 2))
  await until(() => seen.messages.some((m) => m[0] === 0), 'a frame by long-poll')
  const polls = server.state.requests.filter((r) => r.kind === 'poll' && r.query.sid)
  assert.ok(polls.every((r) => r.query.sid === socket.sid))
  socket.send(Uint8Array.of(1, 1, 0))
  await until(() => server.state.posts.length === 1, 'a POST')

  // The next connection to this server goes straight to long-poll.
  const streamsBefore = server.state.requests.filter((r) => r.kind === 'sse').length
  const upgradesBefore = server.state.upgrades
  const second = open(Transport, server.url('other'))
  await second.opened
  assert.equal(second.socket.transport, 'poll')
  assert.equal(server.state.requests.filter((r) => r.kind === 'sse').length, streamsBefore)
  assert.equal(server.state.upgrades, upgradesBefore)
})

test('heartbeats that stop arriving close the connection and make long-poll the next tier', async () => {
  const server = await serve({ sse: 'silent', heartbeatMs: 100 })
  const Transport = createTransport({ storage: memory(), tiers: ['sse', 'poll'], heartbeatGap: 200 })
  const { seen, opened, closed } = open(Transport, server.url())
  await opened
  const close = await closed
  assert.equal(close.code, 1006)
  assert.equal(seen.errors, 1)
  assert.equal(rememberedTier(server.url(), Transport.config), 'poll')
})

test('refusals become the close codes a WebSocket would have had', async () => {
  const cases = [
    [{ refuse: ({ kind }) => kind === 'sse' && [401, { error: 'unauthorized', message: 'token expired', close_code: 4401 }] }, 4401, 'token expired'],
    [{ refuse: ({ kind }) => kind === 'sse' && [403, { error: 'forbidden', message: 'no', close_code: null }] }, 4403, 'no'],
    [{ refuse: ({ kind }) => kind === 'sse' && [502, '<html>Bad Gateway</html>'] }, 1006, 'HTTP 502'],
    [{ refuse: ({ kind }) => kind === 'sse' && [403, '<html>Blocked by policy</html>'] }, 1006, 'HTTP 403']
  ]
  for (const [script, code, reason] of cases) {
    const server = await serve(script)
    const { seen, closed } = open(createTransport({ storage: memory(), tiers: ['sse'] }), server.url())
    const close = await closed
    assert.deepEqual([close.code, close.reason], [code, reason])
    assert.equal(seen.errors, 1)
  }
})

test('a POST refused as too large closes with 1009, a rate limit with 4429', async () => {
  for (const [status, body, code] of [[413, 'too large', 1009], [429, { error: 'rate_limited', message: 'slow down', close_code: 4429 }, 4429]]) {
    const server = await serve({ refuse: ({ kind }) => kind === 'send' && [status, body] })
    const { socket, opened, closed } = open(createTransport({ storage: memory(), tiers: ['sse'] }), server.url())
    await opened
    socket.send(new Uint8Array(10))
    assert.equal((await closed).code, code)
  }
})

test('the server ending a session: 4410 makes the provider reconnect, other codes pass through', async () => {
  for (const [sent, reported] of [[4410, 1006], [4404, 4404], [1001, 1001]]) {
    for (const tiers of [['sse'], ['poll']]) {
      const server = await serve({ pollHold: 200 })
      const { opened, closed } = open(createTransport({ storage: memory(), tiers }), server.url())
      await opened
      server.end(sent, 'bye')
      const close = await closed
      assert.deepEqual([close.code, close.reason, close.wasClean], [reported, 'bye', true], `${tiers} ${sent}`)
    }
  }
})

test('an unreachable server closes with 1006 and nothing is remembered', async () => {
  const server = await serve()
  const url = server.url()
  await server.close()
  servers.length = 0
  const Transport = createTransport({ storage: memory() })
  const { seen, closed } = open(Transport, url)
  assert.equal((await closed).code, 1006)
  // After a failed WebSocket the probe fails: no HTTP tier is even tried.
  assert.deepEqual(seen.transports, hasWebSocket ? [] : ['sse'])
  assert.equal(rememberedTier(url, Transport.config), null)
})

test('a dropped stream resumes the same session after the last frame received', async () => {
  const server = await serve()
  const { socket, seen, opened } = open(createTransport({ storage: memory(), tiers: ['sse'], retryDelay: 50 }), server.url())
  await opened
  server.state.sessions.get(socket.sid).streams.values().next().value.budget = 2
  server.push(Uint8Array.of(1, 1))
  server.push(Uint8Array.of(1, 2)) // then the connection drops
  server.push(Uint8Array.of(1, 3)) // buffered by the session, sent on resume
  await until(() => seen.messages.length === 3, 'all three frames')
  assert.deepEqual(seen.messages, [[1, 1], [1, 2], [1, 3]])
  const resume = server.state.requests.filter((r) => r.kind === 'sse').at(-1)
  assert.deepEqual(resume.query, { sid: socket.sid, last: '2' })
  assert.equal(socket.readyState, 1)
})

test('a POST whose answer was lost is sent again with the same Collab-Seq', async () => {
  const server = await serve({ reply: () => [Uint8Array.of(7)] })
  const { socket, seen, opened } = open(createTransport({ storage: memory(), tiers: ['sse'], retryDelay: 50 }), server.url())
  await opened
  server.state.dropNextPost = true
  socket.send(Uint8Array.of(0, 1))
  await until(() => seen.messages.length === 1, 'the reply of the retry')
  assert.deepEqual(server.state.posts.map((p) => [p.seq, p.frames.length]), [[1, 1], [1, 1]])
  socket.send(Uint8Array.of(0, 2))
  await until(() => server.state.posts.length === 3, 'the next POST')
  assert.equal(server.state.posts[2].seq, 2)
})

test('close() posts what was queued, says goodbye, then reports a clean close', async () => {
  const server = await serve()
  const { socket, opened, closed } = open(createTransport({ storage: memory(), tiers: ['poll'] }), server.url())
  await opened
  socket.send(Uint8Array.of(1, 1, 0)) // an awareness removal, as y-websocket sends before closing
  socket.close()
  assert.equal(socket.readyState, socket.CLOSING)
  const close = await closed
  assert.deepEqual([close.code, close.wasClean], [1005, true])
  assert.deepEqual(server.state.posts.map((p) => p.frames), [[Uint8Array.of(1, 1, 0)]])
  assert.deepEqual(server.state.goodbyes, [{ sid: socket.sid, frames: [] }])
  assert.equal(server.state.requests.at(-1).query.close, '1') // the goodbye came last
  assert.throws(() => socket.close(1006), /InvalidAccessError|neither/)
})

test('send() before open throws as a WebSocket does', async () => {
  const server = await serve()
  const { socket, opened } = open(createTransport({ storage: memory(), tiers: ['sse'] }), server.url())
  assert.throws(() => socket.send(Uint8Array.of(1)), (err) => err.name === 'InvalidStateError')
  await opened
})

test('a WebSocket that opens is used as it is', { skip: !hasWebSocket && 'no WebSocket in this Node' }, async () => {
  const server = await serve({ websocket: 'accept' })
  const Transport = createTransport({ storage: memory() })
  const { socket, seen, opened } = open(Transport, server.url())
  await opened
  assert.equal(socket.transport, 'websocket')
  await until(() => seen.messages.length === 1, 'the server frame')
  assert.deepEqual(seen.messages, [[0, 0, 1]])
  assert.equal(server.state.requests.length, 0, 'no HTTP request besides the upgrade')
})

test('on an HTTP tier a WebSocket is tried again later and taken when it works', { skip: !hasWebSocket && 'no WebSocket in this Node' }, async () => {
  const server = await serve()
  const Transport = createTransport({ storage: memory(), reprobeInterval: 300 })
  const { socket, closed, opened } = open(Transport, server.url())
  await opened
  assert.equal(socket.transport, 'sse')
  server.websocket = 'accept'
  const close = await closed
  assert.deepEqual([close.code, close.reason, close.wasClean], [1000, UPGRADE_REASON, true])
  assert.equal(rememberedTier(server.url(), Transport.config), null)
  const next = open(Transport, server.url())
  await next.opened
  assert.equal(next.socket.transport, 'websocket')
})

test('headers and credentials go with every request of a session, not with the probe', async () => {
  const server = await serve({ pollHold: 200 })
  const seen = []
  const recordingFetch = (url, init = {}) => {
    seen.push({ kind: new URL(url).pathname.split('/')[1], credentials: init.credentials })
    return fetch(url, init)
  }
  for (const tiers of [['websocket', 'sse', 'poll'], ['poll']]) {
    const Transport = createTransport({
      storage: memory(),
      tiers,
      fetch: recordingFetch,
      credentials: 'include',
      headers: () => ({ Authorization: 'Bearer secret' })
    })
    const { socket, opened } = open(Transport, server.url())
    await opened
    socket.send(Uint8Array.of(1, 1, 0))
    await until(() => server.state.posts.length === (tiers.length === 1 ? 2 : 1), 'a POST')
  }
  const session = server.state.requests.filter((r) => r.kind !== 'transport')
  assert.deepEqual(new Set(session.map((r) => r.kind)), new Set(['sse', 'poll', 'send']))
  assert.ok(session.every((r) => r.headers.authorization === 'Bearer secret'))
  // The probe (after the refused WebSocket of the first round only) is anonymous.
  const probe = server.state.requests.filter((r) => r.kind === 'transport')
  assert.equal(probe.length, hasWebSocket ? 1 : 0)
  assert.ok(probe.every((r) => r.headers.authorization === undefined))
  assert.ok(seen.filter((r) => r.kind !== 'transport').every((r) => r.credentials === 'include'))
})

test('a session lost without a goodbye is ended by the next connection to the same server', async () => {
  // The stream breaks and every resume meets a proxy error page: the
  // provider sees 1006 while the session may live on in the server.
  let cut = false
  const server = await serve({ refuse: ({ kind, query }) => cut && kind === 'sse' && query.sid && [502, '<html>Bad Gateway</html>'] })
  const Transport = createTransport({ storage: memory(), tiers: ['sse'], retryDelay: 20 })
  const first = open(Transport, server.url())
  await first.opened
  const lost = first.socket.sid
  cut = true
  server.state.sessions.get(lost).streams.values().next().value.res.socket.destroy()
  assert.equal((await first.closed).code, 1006)
  assert.deepEqual(server.state.goodbyes, [])

  let release
  server.state.holdGoodbye = new Promise((resolve) => { release = resolve })
  const second = open(Transport, server.url())
  await second.opened
  assert.notEqual(second.socket.sid, lost)
  // The new session's first POST (the provider's presence) waits for the goodbye.
  second.socket.send(Uint8Array.of(1, 1, 0))
  await new Promise((resolve) => setTimeout(resolve, 100))
  assert.equal(server.state.posts.length, 0, 'posted before the lost session was ended')
  release()
  await until(() => server.state.posts.length === 1, 'the first POST')
  assert.deepEqual(server.state.goodbyes.map((g) => g.sid), [lost])
  server.state.holdGoodbye = null

  // Said once: a third connection has nothing left to end.
  second.socket.close()
  await second.closed
  const third = open(Transport, server.url())
  await third.opened
  await new Promise((resolve) => setTimeout(resolve, 50))
  assert.deepEqual(server.state.goodbyes.map((g) => g.sid), [lost, second.socket.sid])
})
