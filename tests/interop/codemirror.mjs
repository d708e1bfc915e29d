// CodeMirror 6 bound with y-codemirror.next (`yCollab`) to the `content` text, in jsdom:
// two EditorViews, each on its own Y.Doc and WebsocketProvider, edit one document
// through the server. Typing in view a reaches view b; a plain provider (no editor)
// joining afterwards gets the text from the server, and its edit reaches both views;
// a's cursor (yCollab's awareness) is drawn in b.
//
// options: {url, room, token?}
import { mount } from './dom.mjs'
import { EditorView } from '@codemirror/view'
import { EditorState } from '@codemirror/state'
import { yCollab } from 'y-codemirror.next'
import { connect, main, synced, twoEditors, waitFor } from './lib.mjs'

const editor = (peer, user) => {
  peer.provider.awareness.setLocalStateField('user', user)
  return new EditorView({
    parent: mount(),
    state: EditorState.create({
      doc: peer.text.toString(),
      extensions: [yCollab(peer.text, peer.provider.awareness)]
    })
  })
}

/** Type `text` at `pos` one character at a time, as keystrokes dispatch it. */
const type = (view, pos, text) => {
  for (const [i, char] of [...text].entries()) {
    view.dispatch({
      changes: { from: pos + i, insert: char },
      selection: { anchor: pos + i + 1 },
      userEvent: 'input.type'
    })
  }
}

const shows = (view, text) => view.state.doc.toString() === text

main(async ({ url, room, token = null }, cleanup) => {
  const [a, b, viewA, viewB] = await twoEditors({ url, room, token }, cleanup, editor)

  // A pasted line, then typing and a backspace, all in view a.
  viewA.dispatch({ changes: { from: 0, insert: 'const x = 1\n' }, userEvent: 'input.paste' })
  type(viewA, 11, '23')
  viewA.dispatch({ changes: { from: 12, to: 13 }, userEvent: 'delete.backward' })
  const typed = viewA.state.doc.toString()
  const typedMs = await waitFor(() => shows(viewB, typed), 'the typing in view a to show in view b')

  // A client with no editor joins (the server serves it the text) and appends; both
  // views show it.
  const plain = connect(url, room, { token, name: 'plain' })
  cleanup.push(plain)
  await synced(plain)
  await waitFor(() => plain.text.toString() === typed, 'the plain provider to receive the text')
  plain.text.insert(plain.text.length, '// from a plain provider\n')
  const expected = typed + '// from a plain provider\n'
  await waitFor(
    () => shows(viewA, expected) && shows(viewB, expected),
    "the plain provider's edit to show in both views"
  )

  // a's cursor: yCollab publishes it while view a has focus; view b draws a caret.
  viewA.focus()
  viewA.dispatch({ selection: { anchor: 6 } })
  const caret = () => viewB.contentDOM.querySelector('.cm-ySelectionCaret')
  await waitFor(() => caret() !== null, "a's cursor to be drawn in view b")

  return {
    typed,
    typedMs,
    a: viewA.state.doc.toString(),
    b: viewB.state.doc.toString(),
    plain: plain.text.toString(),
    caretName: caret().textContent,
    closes: [...a.closes, ...b.closes, ...plain.closes]
  }
})
