// Two providers edit the same room concurrently and converge through the server; a third
// provider that joins afterwards receives the whole document (text and a map root).
//
// options: {url, room, token?, edits?}
import { connect, converged, main, sleep, synced, waitFor } from './lib.mjs'

main(async ({ url, room, token = null, edits = 50 }, cleanup) => {
  const a = connect(url, room, { token, name: 'a' })
  const b = connect(url, room, { token, name: 'b' })
  cleanup.push(a, b)
  await Promise.all([synced(a), synced(b)])
  // Interleaved edits from both sides, some at the same position, no waiting in between.
  for (let i = 0; i < edits; i++) {
    a.text.insert(0, `a${i};`)
    b.text.insert(b.text.length, `b${i};`)
    if (i % 10 === 0) await sleep(1)
  }
  a.doc.getMap('meta').set('title', 'from a')
  b.doc.getMap('meta').set('lang', 'js')
  const convergedMs = await converged([a, b])
  await waitFor(
    () => [a, b].every((p) => p.doc.getMap('meta').size === 2),
    'the map root to converge'
  )
  const late = connect(url, room, { token, name: 'late' })
  cleanup.push(late)
  await synced(late)
  await converged([a, late])
  return {
    a: a.text.toString(),
    b: b.text.toString(),
    late: late.text.toString(),
    lateMeta: late.doc.getMap('meta').toJSON(),
    convergedMs,
    closes: [...a.closes, ...b.closes, ...late.closes]
  }
})
