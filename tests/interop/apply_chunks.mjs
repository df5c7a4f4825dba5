// Apply pieces of a Yjs update in given orders and print the documents, for
// tests/test_chunking.py: does Yjs rebuild what pycrdt split?
//
//   node apply_chunks.mjs < cases.json
//
// Input: [{"chunks": [base64...], "orders": [[i...]...]}...].  Output: one JSON
// line, per case per order {"json": doc.toJSON(), "pending": bool} where
// "pending" says whether anything still waits for missing dependencies.
import * as Y from 'yjs'

let input = ''
process.stdin.setEncoding('utf8')
process.stdin.on('data', (part) => { input += part })
process.stdin.on('end', () => {
  const cases = JSON.parse(input)
  const out = cases.map(({ chunks, orders }) => {
    const updates = chunks.map((c) => new Uint8Array(Buffer.from(c, 'base64')))
    return orders.map((order) => {
      const doc = new Y.Doc()
      doc.getText('text')
      doc.getMap('map')
      doc.getArray('array')
      for (const i of order) Y.applyUpdate(doc, updates[i])
      const pending = doc.store.pendingStructs !== null || doc.store.pendingDs !== null
      return { json: doc.toJSON(), pending }
    })
  })
  process.stdout.write(JSON.stringify(out) + '\n')
})
