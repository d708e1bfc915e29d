// Awareness through the server: a state appears for peers already there and for a late
// joiner, updates are relayed, and a peer's state disappears for the others both when it
// leaves cleanly and when its socket just dies (the server removes it: the client-side
// 30 s awareness timeout is far longer than the waits here).
//
// options: {url, room, token?, removalTimeoutMs?}
import { connect, main, synced, waitFor } from './lib.mjs'

const user = (peer, clientId) => {
  const state = peer.provider.awareness.getStates().get(clientId)
  return state && state.user ? state.user : null
}

main(async ({ url, room, token = null, removalTimeoutMs = 5000 }, cleanup) => {
  const a = connect(url, room, { token, name: 'a' })
  const b = connect(url, room, { token, name: 'b' })
  cleanup.push(a, b)
  await Promise.all([synced(a), synced(b)])
  const aId = a.doc.clientID
  const bId = b.doc.clientID
  a.provider.awareness.setLocalStateField('user', { name: 'ada', cursor: 1 })
  b.provider.awareness.setLocalStateField('user', { name: 'bob', cursor: 0 })
  const appearedMs = await waitFor(
    () => user(b, aId) !== null && user(a, bId) !== null,
    'a and b to see each other'
  )
  const bSawA = user(b, aId)

  const late = connect(url, room, { token, name: 'late' })
  cleanup.push(late)
  await synced(late)
  await waitFor(
    () => user(late, aId) !== null && user(late, bId) !== null,
    'the late joiner to receive the current states'
  )
  const lateSaw = { a: user(late, aId), b: user(late, bId) }

  a.provider.awareness.setLocalStateField('user', { name: 'ada', cursor: 42 })
  await waitFor(
    () => (user(b, aId) || {}).cursor === 42 && (user(late, aId) || {}).cursor === 42,
    'an awareness update to be relayed'
  )

  // a leaves cleanly: y-websocket sends a null state for itself before closing.
  a.provider.destroy()
  const cleanRemovalMs = await waitFor(
    () => !b.provider.awareness.getStates().has(aId) && !late.provider.awareness.getStates().has(aId),
    "a's state to disappear after a clean leave",
    removalTimeoutMs
  )

  // b's socket dies without a close frame or a null state: only the server can tell.
  b.provider.shouldConnect = false
  b.provider.ws.terminate()
  const droppedRemovalMs = await waitFor(
    () => !late.provider.awareness.getStates().has(bId),
    "b's state to disappear after its socket died",
    removalTimeoutMs
  )
  return {
    appearedMs,
    bSawA,
    lateSaw,
    cleanRemovalMs,
    droppedRemovalMs,
    lateStates: [...late.provider.awareness.getStates().keys()].length
  }
})
