// Quill 2 bound with y-quill (and quill-cursors) to the `content` text, in jsdom: two
// editors, each on its own Y.Doc and WebsocketProvider, edit one document through the
// server. Text, a bold format and an image embed made in editor a reach editor b; a
// plain provider (no editor) joining afterwards gets the formatted text from the
// server, and its italic text reaches both editors; a's cursor is drawn in b.
//
// options: {url, room, token?}
import { mount } from './dom.mjs'
import Quill from 'quill'
import QuillCursors from 'quill-cursors'
import { QuillBinding } from 'y-quill'
import { connect, main, synced, twoEditors, waitFor } from './lib.mjs'

Quill.register('modules/cursors', QuillCursors)

const editor = (peer, user) => {
  peer.provider.awareness.setLocalStateField('user', user)
  const quill = new Quill(mount(), { modules: { cursors: true } })
  new QuillBinding(peer.text, quill, peer.provider.awareness)
  return quill
}

const contents = (quill) => JSON.stringify(quill.getContents())

main(async ({ url, room, token = null }, cleanup) => {
  const [a, b, quillA, quillB] = await twoEditors({ url, room, token }, cleanup, editor)

  // In editor a, as its keyboard and toolbar do ('user' source): type, bold a word,
  // insert an image.
  for (const [i, char] of [...'Hello weft'].entries()) quillA.insertText(i, char, 'user')
  quillA.formatText(6, 4, 'bold', true, 'user')
  quillA.insertEmbed(10, 'image', 'https://example.com/logo.png', 'user')
  const typed = contents(quillA)
  const typedMs = await waitFor(() => contents(quillB) === typed, 'the edits in a to show in b')

  // A client with no editor joins (the server serves it the text) and appends italics.
  const plain = connect(url, room, { token, name: 'plain' })
  cleanup.push(plain)
  await synced(plain)
  await waitFor(() => plain.text.length === 11, 'the plain provider to receive the text')
  const received = plain.text.toDelta()
  plain.text.insert(11, ' and more', { italic: true })
  await waitFor(
    () => [quillA, quillB].every((quill) => quill.getText() === 'Hello weft and more\n'),
    "the plain provider's edit to show in both editors"
  )

  // a's cursor: y-quill publishes a's selection; quill-cursors draws it in b.
  quillA.setSelection(3, 0, 'user')
  const caret = () => quillB.container.querySelector('.ql-cursor-name')
  await waitFor(() => caret() !== null, "a's cursor to be drawn in b")
  return {
    typed: JSON.parse(typed),
    typedMs,
    received,
    a: quillA.getContents(),
    b: quillB.getContents(),
    plain: plain.text.toDelta(),
    caretName: caret().textContent,
    closes: [...a.closes, ...b.closes, ...plain.closes]
  }
})
