// Two providers keep editing while the server restarts underneath them. Nothing is lost:
// once they are back, both peers and the server hold every token either peer inserted.
//
// Protocol with the Python side: prints {"phase": "ready"} once the first edits have
// converged, keeps editing, and waits for a line on stdin ("restarted") saying a new
// server process is listening; then it stops editing, waits for both providers to be
// back and converged, and prints the result.
//
// options: {url, room, token?, before?, outageTimeoutMs?}
import { connect, converged, emit, main, readLine, sleep, synced } from './lib.mjs'

main(async ({ url, room, token = null, before = 20, outageTimeoutMs = 30000 }, cleanup) => {
  const a = connect(url, room, { token, name: 'a' })
  const b = connect(url, room, { token, name: 'b' })
  cleanup.push(a, b)
  const tokens = []
  const insert = (peer, label) => {
    const t = `<${peer.name}${label}>`
    peer.text.insert(peer.text.length, t)
    tokens.push(t)
  }
  await Promise.all([synced(a), synced(b)])
  for (let i = 0; i < before; i++) {
    insert(a, i)
    insert(b, i)
  }
  await converged([a, b])
  emit({ phase: 'ready' })

  // Keep editing (online, then offline while the server is down) until it is back.
  let restarted = false
  let sawDisconnect = false
  a.provider.on('status', ({ status }) => { sawDisconnect = sawDisconnect || status === 'disconnected' })
  const go = readLine('the restart', outageTimeoutMs).then(() => { restarted = true })
  let n = 0
  while (!restarted) {
    insert(n % 2 ? a : b, `-${n}`)
    n++
    await Promise.race([go, sleep(10)])
  }
  await go
  await Promise.all([synced(a, 20000), synced(b, 20000)])
  insert(a, '-after')
  insert(b, '-after')
  await converged([a, b], 20000)
  const text = a.text.toString()
  return {
    text,
    tokens,
    missing: tokens.filter((t) => !text.includes(t)),
    duringOutage: n,
    sawDisconnect,
    closes: a.closes.filter((c) => c !== null)
  }
})
