// More providers in one room than one connection may hold awareness clients (8): each
// provider re-sends every state it receives, and those echoes are not its clients, so
// nobody is closed and everybody sees everybody.
//
// options: {url, room, token?, peers?}
import { connect, main, synced, waitFor } from './lib.mjs'

main(async ({ url, room, token = null, peers: count = 10 }, cleanup) => {
  const peers = []
  for (let i = 0; i < count; i++) {
    const peer = connect(url, room, { token, name: `p${i}` })
    peers.push(peer)
    cleanup.push(peer)
  }
  await Promise.all(peers.map((p) => synced(p)))
  peers.forEach((p, i) => p.provider.awareness.setLocalStateField('user', { name: `u${i}` }))
  const allSeenMs = await waitFor(
    () => peers.every((p) => p.provider.awareness.getStates().size === count),
    'every provider to see every other one'
  )
  // One more round of changes, echoed by everyone, then the closes are read.
  peers.forEach((p, i) => p.provider.awareness.setLocalStateField('cursor', i))
  await waitFor(
    () => peers.every((p) => [...p.provider.awareness.getStates().values()].every((s) => 'cursor' in s)),
    'every cursor to reach every provider'
  )
  return { allSeenMs, closes: peers.flatMap((p) => p.closes) }
})
