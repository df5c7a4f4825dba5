// How much of a big document has arrived ("Loading 45%").
//
// A collab server sends a document bigger than --sync-chunk-bytes in pieces
// and announces their size first, as an auth message of a kind y-protocols
// ignores ([2, 1, bytes]; collab/protocol.py SyncProgress).  This module
// reads that announcement and counts the bytes of the sync messages that
// follow until the provider reports `sync`.  It wraps the provider's message
// handlers (after connection.js has wrapped them), so nothing else changes.
//
// While a sync in pieces arrives, the pieces are applied merged, a batch at a
// time (every BATCH_BYTES or BATCH_MS): applying each 256 KiB piece on its own
// cost the page ~150 ms per piece on a 6 MB document (CodeMirror, the binding
// and the local copy each see every update), so 64 KiB pieces took 17 s
// where one message took 4 s.  Batches still move the state vector on, so a
// reconnect after a cut asks only for what did not arrive.
import * as Y from 'yjs'
import * as decoding from 'lib0/decoding'
import * as syncProtocol from 'y-protocols/sync'
import { messageAuth, messageSync } from 'y-websocket'

const BATCH_BYTES = 2 * 1024 * 1024
const BATCH_MS = 500

/** The auth message kind collab uses for the size of a sync in pieces. */
export const SYNC_PROGRESS = 1

export class SyncProgress {
  constructor (provider) {
    this.provider = provider
    this.expected = 0 // bytes announced for the sync under way (0: none announced)
    this.received = 0
    this.listeners = new Set()
    this.held = [] // pieces waiting to be applied together
    this.heldBytes = 0
    this.timer = null
    const auth = provider.messageHandlers[messageAuth]
    provider.messageHandlers[messageAuth] = (encoder, decoder, prov, emitSynced, type) => {
      const peek = decoding.createDecoder(decoder.arr)
      peek.pos = decoder.pos
      if (decoding.readVarUint(peek) === SYNC_PROGRESS) {
        if (emitSynced) this.announced(decoding.readVarUint(peek))
        decoder.pos = peek.pos
        return
      }
      auth(encoder, decoder, prov, emitSynced, type)
    }
    const sync = provider.messageHandlers[messageSync]
    provider.messageHandlers[messageSync] = (encoder, decoder, prov, emitSynced, type) => {
      if (emitSynced && this.loading) {
        this.received += decoder.arr.length
        const peek = decoding.createDecoder(decoder.arr)
        peek.pos = decoder.pos
        if (decoding.readVarUint(peek) === syncProtocol.messageYjsUpdate) {
          this.hold(decoding.readVarUint8Array(peek))
          decoder.pos = peek.pos
          this.emit()
          return // nothing to answer: the encoder stays empty
        }
        this.flush() // the last piece (a sync step 2) comes after the others
        this.emit()
      }
      sync(encoder, decoder, prov, emitSynced, type)
    }
    provider.on('sync', (synced) => { if (synced) this.reset() })
    provider.on('status', ({ status }) => {
      if (status !== 'connected') {
        this.flush() // what arrived counts: a reconnect asks for the rest
        this.reset()
      }
    })
  }

  hold (update) {
    this.held.push(update)
    this.heldBytes += update.length
    if (this.heldBytes >= BATCH_BYTES) this.flush()
    else if (this.timer === null) this.timer = setTimeout(() => this.flush(), BATCH_MS)
  }

  flush () {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    if (!this.held.length) return
    const updates = this.held
    this.held = []
    this.heldBytes = 0
    const update = updates.length === 1 ? updates[0] : Y.mergeUpdates(updates)
    Y.applyUpdate(this.provider.doc, update, this.provider)
  }

  announced (bytes) {
    this.expected = bytes
    this.received = 0
    this.emit()
  }

  reset () {
    if (!this.expected) return
    this.expected = 0
    this.received = 0
    this.emit()
  }

  /** A sync in pieces is under way on this socket: the document is not complete yet. */
  get loading () {
    return this.expected > 0 && !this.provider.synced
  }

  /** Whole percent arrived, at most 99 until the provider reports `sync`. */
  get percent () {
    if (!this.expected) return 0
    return Math.min(99, Math.floor((100 * this.received) / this.expected))
  }

  onChange (listener) {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  emit () {
    for (const listener of this.listeners) listener(this)
  }
}
