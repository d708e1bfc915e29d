// Plain Yjs editors keep working on a document another device deleted (root map
// `weft`, `deleted` = true; the text stays): one that had it open types on, one that
// opens it afterwards types too, and a reader that joins last gets every edit. weft
// records such edits as edit/delete conflicts, which standard clients are never sent.
//
// options: {url, room, token?, keystrokes?}
import { connect, converged, main, sleep, synced, waitFor } from './lib.mjs'

main(async ({ url, room, token = null, keystrokes = 20 }, cleanup) => {
  const deleter = connect(url, room, { token, name: 'deleter' })
  const open = connect(url, room, { token, name: 'open' })
  cleanup.push(deleter, open)
  await Promise.all([synced(deleter), synced(open)])
  deleter.text.insert(0, 'line 1\nline 2\n')
  await converged([deleter, open])
  deleter.doc.getMap('weft').set('deleted', true)
  await waitFor(() => open.doc.getMap('weft').get('deleted') === true, 'open to see the deletion')
  for (let i = 0; i < keystrokes; i++) {
    open.text.insert(open.text.length, i % 10 === 9 ? '\n' : 'o')
    if (i % 5 === 0) await sleep(2)
  }
  // the server has all of them (it relayed them to the deleter) before late joins, so
  // late's keystrokes, appended at its end of the text, come after open's
  await converged([deleter, open])
  const late = connect(url, room, { token, name: 'late' })
  cleanup.push(late)
  await synced(late)
  const lateSawDeleted = late.doc.getMap('weft').get('deleted') === true
  for (let i = 0; i < keystrokes; i++) {
    late.text.insert(late.text.length, i % 10 === 9 ? '\n' : 'l')
    if (i % 5 === 0) await sleep(2)
  }
  await converged([deleter, open, late])
  await sleep(300) // any message the server sent meanwhile has arrived
  const reader = connect(url, room, { token, name: 'reader' })
  cleanup.push(reader)
  await synced(reader)
  await converged([deleter, reader])
  return {
    text: reader.text.toString(),
    deleted: reader.doc.getMap('weft').get('deleted'),
    lateSawDeleted,
    connected: [deleter, open, late, reader].every((p) => p.provider.wsconnected),
    closes: [...deleter.closes, ...open.closes, ...late.closes, ...reader.closes],
    denied: [...open.denied, ...late.denied]
  }
})
