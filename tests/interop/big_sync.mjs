// The stock y-websocket client on a big document, reporting what happens, for
// tests/test_big_documents_net.py (the y-websocket #203 situation).
//
//   node big_sync.mjs WS_URL DOCNAME [UPLOAD_BYTES]
//
// Prints one JSON line per event: {"event": "status", "status": "connected"},
// {"event": "close", "code": 1000, "reason": "..."}, and on every `sync`
// {"event": "sync", "length": N, "sha256": "...", "bytes": B} (B: bytes of
// messages received on this connection).  With UPLOAD_BYTES, the client
// holds a text of that many ASCII bytes before it connects, so its sync
// step 2 uploads it.  It runs until stdin closes.
import crypto from 'node:crypto'
import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

const [url, room, uploadArg] = process.argv.slice(2)
console.log = console.info = console.debug = (...args) => console.error(...args)
const send = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

const ydoc = new Y.Doc()
const ytext = ydoc.getText('text')
const upload = Number(uploadArg || 0)
if (upload > 0) {
  const line = 'u'.repeat(1023) + '\n'
  ytext.insert(0, line.repeat(Math.ceil(upload / 1024)).slice(0, upload))
}
const provider = new WebsocketProvider(url, room, ydoc, {
  WebSocketPolyfill: WebSocket,
  disableBc: true,
  maxBackoffTime: 500
})
let received = 0
let socket = null
provider.on('status', ({ status }) => {
  send({ event: 'status', status, at: Date.now() })
  if (status === 'connected' && provider.ws !== socket) {
    socket = provider.ws
    received = 0
    socket.addEventListener('message', (event) => { received += event.data.byteLength })
  }
})
provider.on('connection-close', (event) => {
  send({ event: 'close', code: event ? event.code : null, reason: event ? String(event.reason) : '', at: Date.now() })
})
provider.on('sync', (synced) => {
  if (!synced) return
  const text = ytext.toString()
  const sha256 = crypto.createHash('sha256').update(text, 'utf8').digest('hex')
  send({ event: 'sync', length: Buffer.byteLength(text, 'utf8'), sha256, bytes: received, at: Date.now() })
})
process.stdin.on('data', () => {})
process.stdin.on('end', () => {
  provider.destroy()
  process.exit(0)
})
