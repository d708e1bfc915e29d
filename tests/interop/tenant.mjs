// A token for another tenant is refused: every connection attempt is closed by the
// server before anything is synced, and nothing of the room's content reaches the client.
// The room's owner writes first (and a second owner peer sees it, so it is stored).
//
// options: {url, room, ownerToken, token, attempts?}
import { connect, converged, main, synced, waitFor } from './lib.mjs'

main(async ({ url, room, ownerToken, token, attempts = 2 }, cleanup) => {
  const owner = connect(url, room, { token: ownerToken, name: 'owner' })
  const witness = connect(url, room, { token: ownerToken, name: 'witness' })
  cleanup.push(owner, witness)
  await Promise.all([synced(owner), synced(witness)])
  owner.text.insert(0, 'tenant secret\n')
  await converged([owner, witness], 10000, 'tenant secret\n')

  const intruder = connect(url, room, { token, name: 'intruder' })
  cleanup.push(intruder)
  let everSynced = false
  let messages = 0
  intruder.provider.on('sync', (state) => { everSynced = everSynced || state })
  intruder.provider.on('status', () => {
    const ws = intruder.provider.ws
    if (ws && !ws.counted) {
      ws.counted = true
      ws.addEventListener('message', () => { messages++ })
    }
  })
  intruder.text.insert(0, 'INTRUDER\n') // would be sent if the server ever let it in
  await waitFor(
    () => intruder.closes.filter((c) => c !== null).length >= attempts,
    `${attempts} refused connection attempts`
  )
  return {
    closes: intruder.closes,
    everSynced,
    messages,
    text: intruder.text.toString(),
    ownerText: owner.text.toString()
  }
})
