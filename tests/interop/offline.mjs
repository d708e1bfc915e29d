// A provider edits offline (never connected), while an online provider edits the same
// room; then the offline one connects and both converge on everything.
//
// options: {url, room, token?}
import { connect, converged, main, synced } from './lib.mjs'

main(async ({ url, room, token = null }, cleanup) => {
  const online = connect(url, room, { token, name: 'online' })
  const offline = connect(url, room, { token, name: 'offline', connect: false })
  cleanup.push(online, offline)
  await synced(online)
  online.text.insert(0, 'online-1\n')
  // Offline work: several transactions, inserts and a delete, before any connection.
  offline.text.insert(0, 'offline-1\n')
  offline.text.insert(offline.text.length, 'offline-2\n')
  offline.text.insert(offline.text.length, 'scratch\n')
  offline.text.delete(offline.text.toString().indexOf('scratch'), 'scratch\n'.length)
  offline.doc.getMap('meta').set('offline', true)
  const offlineBefore = offline.text.toString()
  online.text.insert(online.text.length, 'online-2\n')
  offline.provider.connect()
  await synced(offline)
  await converged([online, offline])
  return {
    online: online.text.toString(),
    offline: offline.text.toString(),
    offlineBefore,
    onlineMeta: online.doc.getMap('meta').toJSON(),
    closes: [...online.closes, ...offline.closes]
  }
})
