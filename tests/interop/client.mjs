// A real Yjs client (yjs + y-websocket's WebsocketProvider) driven over stdin/stdout.
//
//   node client.mjs ws://127.0.0.1:PORT/ws DOCNAME [SYNC_TIMEOUT_MS]
//
// COLLAB_TRANSPORT=auto plugs clients/collab-transport's CollabTransport in as the
// WebSocketPolyfill (WebSocket first, HTTP where it is blocked); =http skips the
// WebSocket.  Once the provider is synced it prints {"ready": true, "client_id": N,
// "text": "...", "transport": "websocket"|"sse"|"poll", "events": [...]},
// then reads one JSON command per line on stdin and answers each, in order, with
// one JSON line on stdout: {"ok": true, ...} or {"ok": false, "error": "..."}.
// The root type is the text "text", like the Python side's doc.get("text", type=Text).
//
//   {"cmd": "insert", "index": 3, "text": "abc"}   index in UTF-16 code units (JS semantics)
//   {"cmd": "insert", "after": "[m]", "text": "abc"}  right after the first "[m]" (atomic);
//                                                   "applied": false if "[m]" is gone
//   {"cmd": "delete", "index": 3, "length": 2}
//   {"cmd": "delete", "find": "[m]"}               the first occurrence, "applied" as above
//   {"cmd": "awareness", "field": "user", "value": {...}}   setLocalStateField
//   {"cmd": "clear_awareness"}                     setLocalState(null)
//   {"cmd": "text"}                                -> "text"
//   {"cmd": "states"}                              -> "states": {clientId: state}
//   {"cmd": "wait_text", "text": "...", "timeout": 10000}
//   {"cmd": "transport"}                           -> "transport" and "events" (status/sync, in order)
//   {"cmd": "exit"}                                disconnect cleanly, answer, exit 0
//
// Every edit answers with the resulting "text".  Diagnostics go to stderr; a failure
// to connect or sync, or a broken stdin protocol, exits non-zero.

import readline from 'node:readline'
import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { createTransport } from 'collab-transport'

const [url, room, syncTimeoutArg] = process.argv.slice(2)
if (!url || !room) {
  process.stderr.write('usage: node client.mjs WS_URL DOCNAME [SYNC_TIMEOUT_MS]\n')
  process.exit(2)
}
const syncTimeout = Number(syncTimeoutArg || 10000)

// stdout carries the protocol only: route stray library logging to stderr.
console.log = console.info = console.debug = (...args) => console.error(...args)

const fail = (message) => {
  process.stderr.write(`client.mjs [${room}]: ${message}\n`)
  process.exit(1)
}
process.on('uncaughtException', (err) => fail(`uncaught: ${err && err.stack ? err.stack : err}`))
process.on('unhandledRejection', (err) => fail(`unhandled: ${err && err.stack ? err.stack : err}`))

const send = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

const ydoc = new Y.Doc()
const ytext = ydoc.getText('text')
// COLLAB_TOKEN: an access token, sent as ?token= like the browser editor does.
const params = process.env.COLLAB_TOKEN ? { token: process.env.COLLAB_TOKEN } : {}
const transport = process.env.COLLAB_TRANSPORT
const polyfill = transport === 'auto'
  ? createTransport({ WebSocket })
  : transport === 'http' ? createTransport({ tiers: ['sse', 'poll'] }) : WebSocket
const started = Date.now()
const events = [] // {event, ms since start}: what an application sees of the connection
const provider = new WebsocketProvider(url, room, ydoc, {
  params,
  WebSocketPolyfill: polyfill,
  disableBc: true,
  maxBackoffTime: 500
})
provider.on('connection-error', () => process.stderr.write(`client.mjs [${room}]: connection error\n`))
provider.on('status', ({ status }) => events.push({ event: status, ms: Date.now() - started }))
provider.on('sync', (synced) => events.push({ event: `sync:${synced}`, ms: Date.now() - started }))
const transportInUse = () => (provider.ws ? provider.ws.transport || 'websocket' : null)

/** Resolve once `predicate()` holds, re-checked whenever `subscribe`'s event fires; reject on timeout. */
const until = (predicate, subscribe, timeout, what) =>
  new Promise((resolve, reject) => {
    if (predicate()) return resolve()
    let unsubscribe = () => {}
    const timer = setTimeout(() => {
      unsubscribe()
      reject(new Error(`timed out after ${timeout} ms waiting for ${what}`))
    }, timeout)
    unsubscribe = subscribe(() => {
      if (predicate()) {
        clearTimeout(timer)
        unsubscribe()
        resolve()
      }
    })
  })

const onSync = (listener) => {
  provider.on('sync', listener)
  return () => provider.off('sync', listener)
}
const onText = (listener) => {
  ytext.observe(listener)
  return () => ytext.unobserve(listener)
}

const states = () => {
  const out = {}
  for (const [clientId, state] of provider.awareness.getStates()) out[clientId] = state
  return out
}

const indexArg = (cmd, name) => {
  const value = cmd[name]
  if (!Number.isInteger(value) || value < 0 || value > ytext.length) {
    throw new Error(`${name} must be an integer in 0..${ytext.length}, got ${JSON.stringify(value)}`)
  }
  return value
}

const exit = async () => {
  const socket = provider.ws
  const closed = socket
    ? new Promise((resolve) => {
      socket.addEventListener('close', resolve)
      setTimeout(resolve, 2000)
    })
    : Promise.resolve()
  provider.destroy() // sends the awareness removal, then closes the socket
  await closed
  send({ ok: true })
  process.exit(0)
}

const handlers = {
  insert (cmd) {
    if (typeof cmd.text !== 'string') throw new Error('insert needs "text"')
    if ('after' in cmd) {
      const at = ytext.toString().indexOf(cmd.after)
      if (at < 0) return { applied: false }
      ytext.insert(at + cmd.after.length, cmd.text)
    } else {
      ytext.insert(indexArg(cmd, 'index'), cmd.text)
    }
    return { applied: true }
  },
  delete (cmd) {
    if ('find' in cmd) {
      const at = ytext.toString().indexOf(cmd.find)
      if (at < 0) return { applied: false }
      ytext.delete(at, cmd.find.length)
    } else {
      const index = indexArg(cmd, 'index')
      const length = cmd.length
      if (!Number.isInteger(length) || length < 0 || index + length > ytext.length) {
        throw new Error(`bad length ${JSON.stringify(length)}`)
      }
      ytext.delete(index, length)
    }
    return { applied: true }
  },
  awareness (cmd) {
    if (typeof cmd.field !== 'string') throw new Error('awareness needs "field"')
    provider.awareness.setLocalStateField(cmd.field, cmd.value)
    return { client_id: ydoc.clientID }
  },
  clear_awareness () {
    provider.awareness.setLocalState(null)
    return {}
  },
  text () {
    return {}
  },
  transport () {
    return { transport: transportInUse(), events }
  },
  states () {
    return { client_id: ydoc.clientID, states: states() }
  },
  async wait_text (cmd) {
    if (typeof cmd.text !== 'string') throw new Error('wait_text needs "text"')
    await until(() => ytext.toString() === cmd.text, onText, cmd.timeout ?? 10000, `text ${JSON.stringify(cmd.text)}`)
    return {}
  },
  exit
}

const run = async (line) => {
  let cmd
  try {
    cmd = JSON.parse(line)
  } catch (err) {
    fail(`not JSON: ${JSON.stringify(line)}`)
  }
  const handler = handlers[cmd && cmd.cmd]
  if (!handler) {
    send({ ok: false, error: `unknown command ${JSON.stringify(cmd && cmd.cmd)}` })
    return
  }
  try {
    const result = await handler(cmd)
    send({ ok: true, ...result, text: ytext.toString() })
  } catch (err) {
    send({ ok: false, error: String(err && err.message ? err.message : err), text: ytext.toString() })
  }
}

try {
  await until(() => provider.synced, onSync, syncTimeout, `sync with ${url}/${room}`)
} catch (err) {
  fail(err.message)
}
send({ ready: true, client_id: ydoc.clientID, text: ytext.toString(), transport: transportInUse(), events })

// Commands run strictly one after another, in the order they arrive.
let queue = Promise.resolve()
const input = readline.createInterface({ input: process.stdin, crlfDelay: Infinity })
input.on('line', (line) => {
  if (line.trim() === '') return
  queue = queue.then(() => run(line))
})
input.on('close', () => {
  // The driver went away: leave cleanly.
  queue = queue.then(exit)
})
