// A provider whose socket dies comes back for the others at once. The server removes its
// awareness state when the socket closes (at a clock past the state's); y-websocket
// reconnects 100 ms later and sends its state again at the clock it had, which the others
// ignore (y-protocols takes only a newer clock): it stayed invisible until its second
// 15-second renewal. The script waits `backMs` for it.
//
// options: {url, room, token?, backMs?}
import { connect, main, synced, waitFor } from './lib.mjs'

main(async ({ url, room, token = null, backMs = 3000 }, cleanup) => {
  const a = connect(url, room, { token, name: 'a' })
  const b = connect(url, room, { token, name: 'b' })
  cleanup.push(a, b)
  await Promise.all([synced(a), synced(b)])
  const aId = a.doc.clientID
  const sees = () => (b.provider.awareness.getStates().get(aId) || {}).user || null
  a.provider.awareness.setLocalStateField('user', 'ada')
  await waitFor(() => sees() === 'ada', 'b to see a')
  a.provider.ws.terminate() // no close frame, no null state: y-websocket reconnects by itself
  await waitFor(() => sees() === null, "a's state to be removed")
  const backAfterMs = await waitFor(() => sees() === 'ada', 'b to see a again', backMs)
  return { backAfterMs, closes: b.closes }
})
