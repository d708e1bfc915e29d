// A provider alone in its room stays connected. y-websocket drops a connection on which
// nothing arrived for 30 s (messageReconnectTimeout) and relies on the server echoing its
// 15-second awareness renewals back to it, as the reference server does; a server that
// relays awareness to the other peers only makes a lone editor reconnect every 30 s.
//
// options: {url, room, token?, holdMs?, warp?}
//
// warp (default 1): the clock y-websocket and y-protocols read runs `warp` times faster
// than real time, so holdMs of real time covers holdMs x warp of theirs (their checks run
// on real 3-second intervals and compare Date.now() readings). Date.now is replaced before
// lib0 is loaded (lib0/time binds `getUnixTime = Date.now` when it is first imported),
// hence the dynamic import below.
const options = JSON.parse(process.argv[2] || '{}')
const warp = options.warp || 1
const realNow = Date.now
const started = realNow()
Date.now = () => started + (realNow() - started) * warp

const { connect, main, sleep, synced, converged } = await import('./lib.mjs')

main(async ({ url, room, token = null, holdMs = 36000 }, cleanup) => {
  const alone = connect(url, room, { token, name: 'alone' })
  cleanup.push(alone)
  const statuses = []
  alone.provider.on('status', ({ status }) => statuses.push(status))
  await synced(alone)
  alone.provider.awareness.setLocalStateField('user', { name: 'ada' })
  alone.text.insert(0, 'still here\n')
  await sleep(holdMs)
  const check = connect(url, room, { token, name: 'check' })
  cleanup.push(check)
  await synced(check)
  await converged([alone, check])
  return {
    closes: alone.closes,
    statuses,
    connected: alone.provider.wsconnected,
    text: check.text.toString(),
    clock: Date.now() - started
  }
})
