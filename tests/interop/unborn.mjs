// A read-only provider on a tenant that does not exist yet syncs an empty document (and
// creates nothing); once a writer's first room creates the tenant, the server closes
// the reader (1013, try again), which reconnects by itself and reads what was written.
//
// options: {url, room, writeToken, readToken}
import { connect, converged, main, synced } from './lib.mjs'

main(async ({ url, room, writeToken, readToken }, cleanup) => {
  const reader = connect(url, room, { token: readToken, name: 'reader' })
  cleanup.push(reader)
  await synced(reader)
  const readerSaw = reader.text.toString()

  const writer = connect(url, room, { token: writeToken, name: 'writer' })
  cleanup.push(writer)
  await synced(writer)
  writer.text.insert(0, 'first words\n')
  await converged([writer, reader], 10000, 'first words\n')
  return {
    readerSaw,
    reader: reader.text.toString(),
    readerCloses: reader.closes,
    writerCloses: writer.closes,
    denied: reader.denied
  }
})
