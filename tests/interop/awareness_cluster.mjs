// Awareness across two server instances on one store, with the official client: a peer
// that leaves is removed promptly on the other instance too. y-websocket re-sends every
// awareness change it receives, other peers' states included, so each instance also gets
// the other instance's clients from its own connections; that echo must not make them
// its own (else they stay shown there until the client-side 30 s timeout).
//
// a and c on instance A, b on instance B. a leaves while c stays on A; b updates its own
// state (c must see it); then c leaves (A has no client left). b must see each removal
// within removalTimeoutMs.
//
// options: {urlA, urlB, room, removalTimeoutMs?}
import { connect, main, synced, waitFor } from './lib.mjs'

const user = (peer, clientId) => {
  const state = peer.provider.awareness.getStates().get(clientId)
  return state && state.user ? state.user : null
}

main(async ({ urlA, urlB, room, removalTimeoutMs = 3000 }, cleanup) => {
  const a = connect(urlA, room, { name: 'a' })
  const b = connect(urlB, room, { name: 'b' })
  const c = connect(urlA, room, { name: 'c' })
  cleanup.push(b)
  await Promise.all([synced(a), synced(b), synced(c)])
  const [aId, bId, cId] = [a, b, c].map((p) => p.doc.clientID)
  a.provider.awareness.setLocalStateField('user', { name: 'alice' })
  b.provider.awareness.setLocalStateField('user', { name: 'bob' })
  c.provider.awareness.setLocalStateField('user', { name: 'carol' })
  const all = [a, b, c]
  await waitFor(
    () => all.every((p) => [aId, bId, cId].every((id) => user(p, id) !== null)),
    'a, b and c to see each other'
  )

  a.provider.destroy()
  const [aGoneOnA, aGoneOnB] = await Promise.all([
    waitFor(
      () => !c.provider.awareness.getStates().has(aId),
      "a's state to disappear for c (same instance)",
      removalTimeoutMs
    ),
    waitFor(
      () => !b.provider.awareness.getStates().has(aId),
      "a's state to disappear for b (other instance, c still on A)",
      removalTimeoutMs
    )
  ])

  // c has echoed b's state to A, as b echoed a's and c's to B: b's own updates must
  // still reach A.
  b.provider.awareness.setLocalStateField('user', { name: 'bob', cursor: 7 })
  const bUpdateOnA = await waitFor(
    () => (user(c, bId) || {}).cursor === 7,
    "b's update to reach c on A",
    removalTimeoutMs
  )

  c.provider.destroy()
  const cGoneOnB = await waitFor(
    () => !b.provider.awareness.getStates().has(cId),
    "c's state to disappear for b (other instance, nobody left on A)",
    removalTimeoutMs
  )
  return {
    aGoneOnA,
    aGoneOnB,
    cGoneOnB,
    bUpdateOnA,
    bStates: [...b.provider.awareness.getStates().keys()].length
  }
})
