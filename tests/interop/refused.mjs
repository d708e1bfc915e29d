// Refused providers do not reconnect in a hot loop. y-websocket reconnects 100 ms after
// the close of any connection that had opened, and sends the refused thing again: one
// provider's update over the tenant's update-size limit (its SyncStep2 on every
// reconnect: 1009 each time), another's token for the wrong tenant (4403 at the
// handshake). Both run for `watchMs`; the script counts how often each connected.
//
// options: {url, room, token, badToken, size, watchMs?}
import { connect, main, sleep, synced } from './lib.mjs'

main(async ({ url, room, token, badToken, size, watchMs = 2000 }, cleanup) => {
  const big = connect(url, room, { token, name: 'big' })
  cleanup.push(big)
  await synced(big)
  const bad = connect(url, room, { token: badToken, name: 'bad' })
  cleanup.push(bad)
  const opens = { big: 0, bad: 0 }
  big.provider.on('status', ({ status }) => { if (status === 'connected') opens.big++ })
  bad.provider.on('status', ({ status }) => { if (status === 'connected') opens.bad++ })
  big.text.insert(0, 'x'.repeat(size))
  await sleep(watchMs)
  return { opens, bigCloses: big.closes, badCloses: bad.closes }
})
