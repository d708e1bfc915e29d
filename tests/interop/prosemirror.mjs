// ProseMirror bound with y-prosemirror (ySyncPlugin, yCursorPlugin) to the Y.XmlFragment
// root `prosemirror`, in jsdom: two EditorViews, each on its own Y.Doc and
// WebsocketProvider, edit one document through the server. Structure (a heading, a new
// paragraph), marks and text typed in view a reach view b, b's edit reaches a, a's
// cursor is drawn in b; a plain provider (no editor) joining afterwards gets the same
// document from the server, and the paragraph it appends shows in both views.
//
// options: {url, room, token?}
import { mount } from './dom.mjs'
import { EditorView } from 'prosemirror-view'
import { EditorState, TextSelection } from 'prosemirror-state'
import { schema } from 'prosemirror-schema-basic'
import { ySyncPlugin, yCursorPlugin, yXmlFragmentToProseMirrorRootNode } from 'y-prosemirror'
import { Y, connect, main, synced, twoEditors, waitFor } from './lib.mjs'

const ROOT = 'prosemirror'

const editor = (peer, user) => {
  peer.provider.awareness.setLocalStateField('user', user)
  const fragment = peer.doc.getXmlFragment(ROOT)
  return new EditorView(mount(), {
    state: EditorState.create({
      schema,
      plugins: [ySyncPlugin(fragment), yCursorPlugin(peer.provider.awareness)]
    })
  })
}

const json = (view) => JSON.stringify(view.state.doc.toJSON())

/** Type `text` at `pos` one character at a time, as keystrokes dispatch it. */
const type = (view, pos, text) => {
  for (const [i, char] of [...text].entries()) view.dispatch(view.state.tr.insertText(char, pos + i))
}

main(async ({ url, room, token = null }, cleanup) => {
  const [a, b, viewA, viewB] = await twoEditors({ url, room, token }, cleanup, editor)

  // In view a: type into the empty paragraph, make it a heading, bold a word, and start
  // a second paragraph.
  type(viewA, 1, 'Hello weft')
  viewA.dispatch(viewA.state.tr.setBlockType(1, 1, schema.nodes.heading, { level: 1 }))
  viewA.dispatch(viewA.state.tr.addMark(7, 11, schema.marks.strong.create()))
  const end = viewA.state.doc.content.size
  viewA.dispatch(viewA.state.tr.insert(end, schema.nodes.paragraph.create(null, schema.text('Second'))))
  const typed = json(viewA)
  const typedMs = await waitFor(() => json(viewB) === typed, 'the edits in view a to show in view b')

  // In view b: append to the paragraph; view a shows it.
  type(viewB, viewB.state.doc.content.size - 1, ' line')
  await waitFor(() => json(viewA) === json(viewB), "b's edit to show in view a")

  // a's cursor: yCursorPlugin publishes it while view a has focus; view b draws it.
  viewA.focus()
  viewA.dispatch(viewA.state.tr.setSelection(TextSelection.create(viewA.state.doc, 3)))
  const caret = () => viewB.dom.querySelector('.ProseMirror-yjs-cursor')
  await waitFor(() => caret() !== null, "a's cursor to be drawn in view b")

  // A provider with no editor joins now: the server serves it the whole fragment.
  const late = connect(url, room, { token, name: 'late' })
  cleanup.push(late)
  await synced(late)
  const fragment = late.doc.getXmlFragment(ROOT)
  await waitFor(
    () => yXmlFragmentToProseMirrorRootNode(fragment, schema).eq(viewA.state.doc),
    'the late provider to receive the document'
  )
  // It appends a paragraph without an editor (Y.XmlElement, as y-prosemirror maps one);
  // both views show it.
  const paragraph = new Y.XmlElement('paragraph')
  paragraph.insert(0, [new Y.XmlText('From a plain provider')])
  fragment.insert(fragment.length, [paragraph])
  await waitFor(
    () => [viewA, viewB].every((view) => view.state.doc.lastChild.textContent === 'From a plain provider'),
    "the plain provider's paragraph to show in both views"
  )
  return {
    typed: JSON.parse(typed),
    a: viewA.state.doc.toJSON(),
    b: viewB.state.doc.toJSON(),
    late: yXmlFragmentToProseMirrorRootNode(fragment, schema).toJSON(),
    lateXml: fragment.toString(),
    typedMs,
    caretName: caret().textContent,
    closes: [...a.closes, ...b.closes, ...late.closes]
  }
})
