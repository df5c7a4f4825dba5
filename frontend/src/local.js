// This browser's copy of a document (IndexedDB, through y-indexeddb, as
// y-sweet's client does): what was typed while the server was away survives a
// reload or a closed tab, and is sent when the connection is back.
import { IndexeddbPersistence } from 'y-indexeddb'

const LOAD_TIMEOUT = 3000

/**
 * Open the copy of `name` into `ydoc`; resolves once its content is loaded,
 * or with `available: false` when the browser keeps nothing (storage off).
 * `seen` says whether this copy was ever in sync with the server: a copy of a
 * document the server no longer has is then a leftover, not an offline draft.
 */
export async function openLocalCopy (name, ydoc) {
  let persistence = null
  try {
    persistence = new IndexeddbPersistence(`collab:${name}`, ydoc)
    await Promise.race([
      persistence.whenSynced,
      new Promise((_resolve, reject) => setTimeout(() => reject(new Error('IndexedDB timed out')), LOAD_TIMEOUT))
    ])
  } catch {
    try { persistence?.destroy() } catch {}
    return { available: false, seen: false, hasContent: () => false, markSeen () {}, clear () {} }
  }
  let seen = false
  try {
    seen = Boolean(await persistence.get('seen'))
  } catch {}
  return {
    available: true,
    seen,
    hasContent: () => ydoc.store.clients.size > 0,
    markSeen () {
      if (seen) return
      seen = true
      persistence.set('seen', Date.now()).catch(() => {})
    },
    /** Forget the copy (the document was deleted or renamed). */
    clear () {
      persistence.clearData().catch(() => {})
    }
  }
}

/** The text this browser has stored for `name`, read into a fresh document (for tests and the console). */
export async function storedText (name, Y) {
  const doc = new Y.Doc()
  const copy = new IndexeddbPersistence(`collab:${name}`, doc)
  await copy.whenSynced
  const text = doc.getText('text').toString()
  await copy.destroy()
  doc.destroy()
  return text
}
