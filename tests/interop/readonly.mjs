// A read-only token syncs and reads, but its edits are refused with the y-protocols
// permission-denied message, never reach other peers, and are refused again when the
// provider reconnects and re-sends them in its SyncStep2.
//
// options: {url, room, writeToken, readToken, quietMs?}
import { connect, converged, main, sleep, synced, waitFor } from './lib.mjs'

main(async ({ url, room, writeToken, readToken, quietMs = 1000 }, cleanup) => {
  const writer = connect(url, room, { token: writeToken, name: 'writer' })
  cleanup.push(writer)
  await synced(writer)
  writer.text.insert(0, 'seed\n')

  const reader = connect(url, room, { token: readToken, name: 'reader' })
  cleanup.push(reader)
  await synced(reader)
  await converged([writer, reader], 10000, 'seed\n')
  const readerSaw = reader.text.toString()

  reader.text.insert(0, 'READ-ONLY EDIT\n')
  await waitFor(() => reader.denied.length >= 1, 'the permission-denied message')
  const deniedFirst = reader.denied.length

  // Reconnect: the server's SyncStep1 makes the client send its edit again (SyncStep2).
  reader.provider.disconnect()
  reader.provider.connect()
  await synced(reader)
  await waitFor(() => reader.denied.length > deniedFirst, 'the denial after reconnecting')

  await sleep(quietMs) // give a wrongly accepted edit the time to show up at the writer
  const fresh = connect(url, room, { token: readToken, name: 'fresh' })
  cleanup.push(fresh)
  await synced(fresh)
  return {
    readerSaw,
    reader: reader.text.toString(),
    writer: writer.text.toString(),
    fresh: fresh.text.toString(),
    denied: reader.denied,
    readerConnected: reader.provider.wsconnected,
    readerCloses: reader.closes
  }
})
