// The live connection as the page shows it.  Wraps the stock y-websocket
// provider so that every refusal gets its own state, retries stop where a
// retry cannot help, the page backs off where the server asks it to, and the
// page knows which of this tab's changes the server has confirmed.
import * as Y from 'yjs'
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'
import * as syncProtocol from 'y-protocols/sync'
import { WebsocketProvider, messageAuth, messageSync } from 'y-websocket'
import { CollabTransport, UPGRADE_REASON } from 'collab-transport'
import { checkAccess, getToken, websocketBase } from './common.js'

/** Close codes sent after the upgrade (collab/closecodes.py) and the state each one leads to. */
export const CLOSE_STATES = {
  1002: 'refused', // malformed message
  1003: 'refused', // text frame
  1007: 'refused', // an update the server could not apply
  1008: 'refused', // policy
  1009: 'too-big', // one message above --max-message-size
  1011: 'broken', // the stored document cannot be read
  1013: 'busy', // server or document full, store down: later
  4401: 'expired', // the token expired while connected
  4403: 'forbidden',
  4404: 'removed', // deleted or renamed
  4413: 'doc-full', // --max-doc-size
  4429: 'busy' // rate limited
}

/** States in which typing is kept: sent now, or later from this browser. */
const KEEPS_TYPING = new Set(['connecting', 'connected', 'offline', 'busy'])

/** First and longest pause after "slow down" (1013, 4429), in ms. */
const BACKOFF_FIRST = 4000
const BACKOFF_MAX = 60_000

/** How long after a change this tab asks the server whether it has it. */
const CONFIRM_DELAY = 250

const LIMIT_KEY = 'collab.maxMessage'

/** An unconfirmed message this large, sent before an abnormal close, may be why. */
const SUSPECT_SIZE = 64 * 1024

function learnedLimit () {
  try {
    return Number(sessionStorage.getItem(LIMIT_KEY)) || null
  } catch {
    return null
  }
}

/**
 * One document's connection: `state.kind` is one of connecting, connected,
 * offline, busy (backing off), signin, expired, forbidden (the token),
 * too-big, doc-full (the server refused a change), removed (deleted or
 * renamed), refused, broken, denied (read-only with unsaved changes), gone
 * (the server has no such document but this browser has a copy).
 */
export class Connection {
  constructor ({ name, ydoc, local = null, readOnly = false }) {
    this.name = name
    this.ydoc = ydoc
    this.local = local
    this.state = { kind: 'connecting' }
    this.readOnly = readOnly // no writes: the token says so, or the server refused one
    this.diverged = false // read-only, yet this tab holds changes the server lacks
    this.isNew = false // the server had no such document when the page opened
    this.everSynced = false
    this.listeners = new Set()
    // Confirmation: each local change bumps localSeq; a SyncStep1 sent after it
    // is answered (in order, on the same socket) only once the server has
    // applied everything sent before it.
    this.localSeq = 0
    this.confirmedSeq = 0
    this.confirmedClock = 0 // own items below this clock are on the server
    this.inFlight = [] // per socket: the SyncStep1s awaiting their SyncStep2, {seq, clock} or null
    this.serverReady = false // the server's SyncStep1 was answered on this socket
    this.serverVector = null
    this.socketOpened = false
    this.openedAt = 0
    this.largestSent = 0
    this.suspectSize = 0
    this.maxMessage = learnedLimit()
    this.backoff = 0
    this.retryTimer = null
    this.confirmTimer = null
    this.diagnosing = false

    const connection = this
    // CollabTransport (clients/collab-transport): a WebSocket where one gets
    // through, else the same protocol over HTTP (Server-Sent Events or
    // long-poll, and POST).  Remember the largest message sent: a 1009 can
    // then say how big it was.
    class MeasuredSocket extends CollabTransport {
      send (data) {
        const size = data.byteLength ?? data.length ?? 0
        if (size > connection.largestSent) connection.largestSent = size
        super.send(data)
      }
    }
    this.provider = new WebsocketProvider(websocketBase(), encodeURIComponent(name), ydoc, {
      connect: false,
      params: this.params(),
      WebSocketPolyfill: MeasuredSocket,
      // Codes with a state of their own are handled here, not retried blindly.
      shouldReconnect: (event) => !(event.code in CLOSE_STATES)
    })
    this.hookMessages()
    this.provider.on('status', ({ status }) => this.onStatus(status))
    this.provider.on('connection-close', (event) => this.onClose(event))
    this.provider.on('sync', (synced) => {
      if (synced && !this.everSynced) {
        this.everSynced = true
        this.local?.markSeen()
      }
      this.emit()
    })
    ydoc.on('update', (_update, origin) => {
      if (origin === this.provider) return // from the server, or from another tab
      const wasUnsaved = this.unsaved
      this.localSeq += 1
      this.scheduleConfirm()
      if (!wasUnsaved) this.emit()
    })
    window.addEventListener('online', () => { if (this.state.kind === 'offline') this.provider.connect() })
    window.addEventListener('offline', () => this.emit())
  }

  params () {
    const token = getToken()
    return token ? { token } : {}
  }

  /** Typing into the page now is kept: the state allows it and the access does. */
  get editable () {
    return !this.readOnly && KEEPS_TYPING.has(this.state.kind)
  }

  /** This tab holds changes the server has not confirmed. */
  get unsaved () {
    if (this.readOnly) return this.diverged
    return this.localSeq > this.confirmedSeq
  }

  get connected () {
    return this.provider.wsconnected
  }

  /** How this tab reaches the server: 'websocket', 'sse' or 'poll' (null while not connected). */
  get transport () {
    return this.provider.wsconnected ? this.provider.ws?.transport ?? null : null
  }

  onChange (listener) {
    this.listeners.add(listener)
  }

  emit () {
    for (const listener of this.listeners) listener(this)
  }

  setState (kind, detail = {}) {
    this.state = { kind, ...detail }
    this.emit()
  }

  // --- starting --------------------------------------------------------------

  /**
   * Ask the API first: a refused token gets its state without a doomed socket,
   * and a document that does not exist is said to be new (or, when this
   * browser still holds a copy the server has lost, the person chooses).
   */
  async start () {
    this.setState('connecting')
    const access = await checkAccess(this.name)
    if (access.kind === 'unauthorized' || access.kind === 'forbidden') {
      this.refuseAccess(access)
      return
    }
    this.isNew = access.kind === 'missing'
    if (this.isNew && this.local?.seen && this.local.hasContent()) {
      this.setState('gone')
      return
    }
    if (access.kind === 'unreachable') this.setState('offline', { unreachable: true })
    this.connect()
  }

  /** Try the refused change once more (after a guessed, not a stated, refusal). */
  retry () {
    this.suspectSize = 0
    this.setState('connecting')
    this.connect()
  }

  connect () {
    clearTimeout(this.retryTimer)
    this.retryTimer = null
    this.provider.params = this.params()
    this.provider.connect()
  }

  /** Use another token: start over with it. */
  async retryWith (readOnly) {
    this.provider.disconnect()
    this.readOnly = readOnly
    this.diverged = false
    await this.start()
  }

  /** The person chose to put this browser's copy back on the server. */
  restore () {
    this.isNew = false
    this.setState('connecting')
    this.connect()
  }

  // --- the wire --------------------------------------------------------------

  hookMessages () {
    const provider = this.provider
    const sync = provider.messageHandlers[messageSync]
    provider.messageHandlers[messageSync] = (encoder, decoder, prov, emitSynced, type) => {
      const peek = decoding.createDecoder(decoder.arr)
      peek.pos = decoder.pos
      const kind = decoding.readVarUint(peek)
      const vector = kind === syncProtocol.messageYjsSyncStep1 ? decoding.readVarUint8Array(peek) : null
      sync(encoder, decoder, prov, emitSynced, type)
      if (!emitSynced) return // another tab over BroadcastChannel, not the server
      if (kind === syncProtocol.messageYjsSyncStep1) this.onServerVector(vector)
      else if (kind === syncProtocol.messageYjsSyncStep2) this.onStep2()
    }
    // The stock handler only logs "permission denied" to the console.
    provider.messageHandlers[messageAuth] = (_encoder, decoder, _prov, emitSynced) => {
      const type = decoding.readVarUint(decoder)
      const reason = type === 0 ? decoding.readVarString(decoder) : 'permission denied'
      if (emitSynced) this.onDenied(reason)
    }
  }

  onStatus (status) {
    if (status === 'connecting') {
      this.socketOpened = false
    } else if (status === 'connected') {
      this.socketOpened = true
      this.openedAt = Date.now()
      this.serverReady = false
      this.largestSent = 0
      this.inFlight = [null] // the provider's own SyncStep1, sent right after this event
      this.setState('connected')
    }
  }

  onServerVector (vector) {
    this.serverVector = Y.decodeStateVector(vector)
    const known = this.serverVector.get(this.ydoc.clientID) || 0
    if (known > this.confirmedClock) this.confirmedClock = known
    // The provider answers with everything the server lacks right after this
    // handler returns; ask for the confirmation after that answer.
    setTimeout(() => {
      this.serverReady = true
      this.confirm()
    }, 0)
  }

  onStep2 () {
    const probe = this.inFlight.shift()
    if (probe && !this.readOnly) {
      this.confirmedSeq = Math.max(this.confirmedSeq, probe.seq)
      this.confirmedClock = Math.max(this.confirmedClock, probe.clock)
      this.largestSent = 0
      this.suspectSize = 0
    }
    if (this.unsaved) this.scheduleConfirm()
    this.emit()
  }

  scheduleConfirm () {
    if (this.confirmTimer != null || this.readOnly) return
    this.confirmTimer = setTimeout(() => {
      this.confirmTimer = null
      this.confirm()
    }, CONFIRM_DELAY)
  }

  /** Send a SyncStep1 whose answer confirms every change made so far. */
  confirm () {
    const ws = this.provider.ws
    if (!this.provider.wsconnected || !ws || ws.readyState !== WebSocket.OPEN || !this.serverReady) return
    if (this.readOnly || this.localSeq <= this.confirmedSeq) return
    if (this.inFlight.some((probe) => probe !== null)) return // its answer schedules the next
    const encoder = encoding.createEncoder()
    encoding.writeVarUint(encoder, messageSync)
    syncProtocol.writeSyncStep1(encoder, this.ydoc)
    this.inFlight.push({ seq: this.localSeq, clock: Y.getState(this.ydoc.store, this.ydoc.clientID) })
    ws.send(encoding.toUint8Array(encoder))
  }

  onDenied (reason) {
    const first = !this.readOnly || !this.deniedOnce
    this.deniedOnce = true
    this.readOnly = true
    if (first) this.diverged = this.holdsWhatServerLacks()
    this.deniedReason = reason
    if (this.diverged) this.setState('denied', { reason })
    else this.emit()
  }

  /** Whether this tab has items the server did not have when this socket opened. */
  holdsWhatServerLacks () {
    if (!this.serverVector) return this.localSeq > 0
    const local = Y.decodeStateVector(Y.encodeStateVector(this.ydoc))
    for (const [client, clock] of local) {
      if (clock > (this.serverVector.get(client) || 0)) return true
    }
    return false
  }

  onClose (event) {
    const opened = this.socketOpened
    this.socketOpened = false
    this.serverReady = false
    this.inFlight = []
    if (event == null) { // closed by this page (disconnect, or the silence watchdog)
      if (KEEPS_TYPING.has(this.state.kind) && this.state.kind !== 'busy') this.setState('offline')
      return
    }
    if (event.reason === UPGRADE_REASON) { // leaving HTTP for a WebSocket that works again
      if (this.state.kind === 'connected') this.setState('connecting')
      return
    }
    if (opened && Date.now() - this.openedAt > 30_000) this.backoff = 0
    const kind = CLOSE_STATES[event.code]
    if (kind) {
      this.refuseClose(kind, event)
    } else if (!opened) {
      this.setState('offline', { unreachable: this.state.unreachable })
      this.diagnose()
    } else if (this.tooBigAgain(event)) {
      this.refuseClose('too-big', { code: 1006, reason: '' })
    } else {
      this.setState('offline')
    }
  }

  /**
   * A server that refuses an oversized message may reset the connection
   * while the message is still arriving: the browser then sees 1006, not
   * 1009.  The same big unconfirmed message dropping the connection twice in
   * a row is taken as that refusal, instead of resending it forever.
   */
  tooBigAgain (event) {
    const size = this.largestSent
    if (event.code !== 1006 || size < SUSPECT_SIZE) {
      this.suspectSize = 0
      return false
    }
    if (this.suspectSize && size >= this.suspectSize * 0.9) return true
    this.suspectSize = size
    return false
  }

  refuseClose (kind, event) {
    // No blind retry: the provider would resend what was just refused (a
    // guessed refusal comes from a close it would otherwise retry).
    this.provider.shouldConnect = false
    const reason = event.reason || ''
    if (kind === 'busy') {
      const delay = Math.min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** this.backoff) * (0.8 + Math.random() * 0.4)
      this.backoff += 1
      clearTimeout(this.retryTimer)
      this.retryTimer = setTimeout(() => this.connect(), delay)
      this.setState('busy', { code: event.code, reason, until: Date.now() + delay })
      return
    }
    if (kind === 'too-big') {
      const limit = Number((/limit (\d+)/i.exec(reason) || [])[1]) || null
      // Without the limit in the reason, the refused message bounds it from above.
      this.learnLimit(limit || (event.code === 1009 ? this.largestSent : 0))
      // A guess from two dropped connections (1006) may be wrong: the page offers a retry too.
      this.setState('too-big', { code: event.code, reason, size: this.largestSent, limit, suspected: event.code !== 1009 })
      return
    }
    if (kind === 'removed') {
      const renamed = /renam/i.test(reason)
      const to = (/renamed to (.+)$/i.exec(reason) || [])[1] || null
      this.local?.clear() // reopening must not bring the old text back silently
      this.setState('removed', { code: event.code, reason, renamed, to })
      return
    }
    this.setState(kind, { code: event.code, reason })
  }

  refuseAccess (access) {
    this.provider.disconnect()
    const kind = access.kind === 'forbidden'
      ? 'forbidden'
      : access.code === 'expired' || access.code === 'token_expired' ? 'expired' : 'signin'
    this.setState(kind, { code: access.code, reason: access.message, hasToken: Boolean(getToken()) })
  }

  /** The socket failed before it opened: ask the API why (a browser cannot see the HTTP status). */
  async diagnose () {
    if (this.diagnosing) return
    this.diagnosing = true
    try {
      const access = await checkAccess(this.name)
      if (this.provider.wsconnected || !KEEPS_TYPING.has(this.state.kind)) return
      if (access.kind === 'unauthorized' || access.kind === 'forbidden') this.refuseAccess(access)
      else this.setState('offline', { unreachable: access.kind === 'unreachable' })
    } finally {
      this.diagnosing = false
    }
  }

  // --- getting out of a refused change ---------------------------------------

  /** Pastes from now on are checked against this many bytes (see the editor's paste guard). */
  learnLimit (bound) {
    if (!bound || (this.maxMessage && bound >= this.maxMessage)) return
    this.maxMessage = bound
    try { sessionStorage.setItem(LIMIT_KEY, String(bound)) } catch {}
  }

  /**
   * Remove this tab's changes the server has not confirmed (the paste that was
   * too large) and connect again.  The removed text is deleted in a
   * transaction no undo manager tracks, so Yjs drops its content and the next
   * sync is small.
   */
  dropUnsaved () {
    // Removing a change the page only guessed too large confirms the guess.
    if (this.state.kind === 'too-big' && this.state.suspected) this.learnLimit(this.state.size)
    const doc = this.ydoc
    const from = this.confirmedClock
    const end = Y.getState(doc.store, doc.clientID)
    if (end > from) {
      doc.transact((transaction) => {
        Y.getItemCleanStart(transaction, Y.createID(doc.clientID, from))
        for (const struct of [...(doc.store.clients.get(doc.clientID) || [])]) {
          if (struct.id.clock >= from && struct instanceof Y.Item && !struct.deleted) struct.delete(transaction)
        }
      }, 'collab:drop-unsaved')
    }
    this.setState('connecting')
    this.connect()
  }
}
