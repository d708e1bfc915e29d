// The page monaco.mjs serves to Chromium (bundled by esbuild, never run by Node): one
// Monaco editor bound with y-monaco to the `content` text of its own Y.Doc, synced by
// y-websocket's WebsocketProvider over the browser's own WebSocket.
//
// Query: ?url=ws://...&room=...&token=...&name=ada&color=%23ff0000. The page keeps its
// parts in `window.weft` for the script to read: editor, doc, provider, ytext, closes,
// workers (the labels of the workers Monaco started), workerReplies (messages they sent)
// and workerErrors.
import * as monaco from 'monaco-editor'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { MonacoBinding } from 'y-monaco'

const query = new URLSearchParams(window.location.search)
const weft = { closes: [], workers: [], workerReplies: 0, workerErrors: [] }
window.weft = weft

// Monaco's editor worker (links, unicode highlights, word suggestions, diffs), bundled
// beside this page; a plaintext editor needs no language worker. Monaco starts it when
// the editor first looks for links, as soon as it is created.
self.MonacoEnvironment = {
  getWorker: (_workerId, label) => {
    const worker = new Worker('./editor.worker.js', { type: 'module', name: label })
    worker.addEventListener('error', (event) => weft.workerErrors.push(String(event.message)))
    weft.workers.push(label)
    worker.addEventListener('message', () => { weft.workerReplies += 1 })
    return worker
  }
}

weft.doc = new Y.Doc()
weft.ytext = weft.doc.getText('content')
// disableBc: pages of one origin would otherwise sync over a BroadcastChannel, not
// through the server.
weft.provider = new WebsocketProvider(query.get('url'), query.get('room'), weft.doc, {
  params: { token: query.get('token') },
  disableBc: true,
  maxBackoffTime: 500
})
weft.provider.on('connection-close', (event) => {
  weft.closes.push(event === null ? null : { code: event.code, reason: String(event.reason) })
})
weft.provider.awareness.setLocalStateField('user', {
  name: query.get('name'),
  color: query.get('color')
})

weft.editor = monaco.editor.create(document.getElementById('editor'), {
  value: '',
  language: 'plaintext',
  minimap: { enabled: false },
  // No word suggestions popping up while the test types: its Enter is a new line, never
  // a suggestion accepted.
  quickSuggestions: false
})
const editors = new Set([weft.editor])
new MonacoBinding(weft.ytext, weft.editor.getModel(), editors, weft.provider.awareness)
