import assert from 'node:assert/strict'
import { test } from 'node:test'

import { SseParser, appBase, decodeFrames, encodeFrames, endpointUrl, fromBase64, probeUrl, toBase64 } from '../src/wire.js'

test('endpoint URLs replace the last /ws/ segment and keep the query', () => {
  assert.equal(endpointUrl('ws://h:1/ws/notes?token=t', 'sse'), 'http://h:1/sse/notes?token=t')
  assert.equal(endpointUrl('wss://h/collab/ws/a%2Fb', 'send', { sid: 'x' }), 'https://h/collab/send/a%2Fb?sid=x')
  // A document name with / in it: the last /ws/ is the route.
  assert.equal(endpointUrl('ws://h/ws/team/ws/plan', 'poll', { sid: 's', after: 3 }), 'http://h/ws/team/poll/plan?sid=s&after=3')
  assert.equal(appBase('wss://h/collab/ws/x?token=1'), 'https://h/collab/')
  assert.equal(probeUrl('ws://h:8/ws/x'), 'http://h:8/transport/probe')
  assert.throws(() => endpointUrl('ws://h/other/x', 'sse'), TypeError)
})

test('frame batches round-trip, lengths as lib0 varuints', () => {
  const sizes = [0, 1, 127, 128, 300, 16384, 70000]
  const frames = sizes.map((n) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + n) & 0xff))
  const batch = encodeFrames(frames)
  assert.deepEqual(decodeFrames(batch), frames)
  assert.deepEqual([...encodeFrames([new Uint8Array(128)]).subarray(0, 2)], [0x80, 0x01])
  assert.deepEqual(decodeFrames(new Uint8Array(0)), [])
})

test('a truncated batch is refused, not half read', () => {
  const batch = encodeFrames([Uint8Array.of(1, 2, 3), new Uint8Array(200)])
  for (let cut = 1; cut < batch.length; cut++) {
    if (cut === 4) continue // exactly the first frame: a whole batch
    assert.throws(() => decodeFrames(batch.subarray(0, cut)), RangeError, `cut at ${cut}`)
  }
})

test('base64 round-trips every length and matches Buffer', () => {
  for (let n = 0; n < 70; n++) {
    const bytes = Uint8Array.from({ length: n }, (_, i) => (i * 37 + 11) & 0xff)
    const text = toBase64(bytes)
    assert.equal(text, Buffer.from(bytes).toString('base64'))
    assert.deepEqual(fromBase64(text), bytes)
    assert.deepEqual(fromBase64(text.replace(/=+$/, '')), bytes)
  }
  assert.deepEqual([...fromBase64('AQEA')], [1, 1, 0]) // the server's keepalive frame
  assert.throws(() => fromBase64('AQ*A'), SyntaxError)
})

test('the SSE parser finds the same events however the stream is cut', () => {
  const stream = 'event: open\r\ndata: {"sid":"s1"}\r\n\r\n: a comment\n\nid: 1\ndata: AQEA\n\n' +
    'id: 2\rdata:AQID\r\rdata: one\ndata: two\n\nevent: close\ndata: {"code":4410}\n\n'
  const expected = [
    { event: 'open', data: '{"sid":"s1"}', id: null },
    { event: 'message', data: 'AQEA', id: '1' },
    { event: 'message', data: 'AQID', id: '2' },
    { event: 'message', data: 'one\ntwo', id: '2' }, // the id carries over
    { event: 'close', data: '{"code":4410}', id: '2' }
  ]
  assert.deepEqual(new SseParser().feed(stream), expected)
  for (let size = 1; size < 9; size++) {
    const parser = new SseParser()
    const events = []
    for (let i = 0; i < stream.length; i += size) events.push(...parser.feed(stream.slice(i, i + size)))
    assert.deepEqual(events, expected, `chunks of ${size}`)
  }
})
