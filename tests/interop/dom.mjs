// A browser DOM for the editor scripts: one jsdom window, and the globals the editor
// libraries use from it. Import this module before any editor module: some read
// globals when they load (@codemirror/view `navigator` and `document`, quill `Node`).
//
// jsdom does no layout: the geometry calls the editors make while measuring get empty
// rectangles, so the editors keep working but place nothing on screen. An error jsdom
// reports (say, one thrown in an editor's animation-frame callback) fails the script
// the way lib.mjs's main() does: {"ok": false, "error": ...} and exit status 1.

import { JSDOM, VirtualConsole } from 'jsdom'

const virtualConsole = new VirtualConsole()
virtualConsole.sendTo(console, { omitJSDOMErrors: true })
virtualConsole.on('jsdomError', (err) => {
  process.stdout.write(JSON.stringify({ ok: false, error: `jsdom: ${err.stack || err}` }) + '\n')
  process.exit(1)
})
const { window } = new JSDOM('<!DOCTYPE html><html><body></body></html>', {
  pretendToBeVisual: true, // requestAnimationFrame, which CodeMirror measures with
  virtualConsole
})

// jsdom's elements answer empty rectangles; its ranges have no geometry at all (Quill
// measures its selection, quill-cursors the remote ones).
window.Range.prototype.getClientRects = () => []
window.Range.prototype.getBoundingClientRect = () => window.document.body.getBoundingClientRect()

// What CodeMirror, ProseMirror, Quill and quill-cursors (a UMD bundle: `self`) use.
const globals = [
  'window', 'self', 'Window', 'document', 'navigator', 'MutationObserver', 'Node', 'Element',
  'Text', 'getComputedStyle', 'requestAnimationFrame', 'cancelAnimationFrame'
]
for (const name of globals) {
  const value = window[name]
  // Methods keep the window as `this`; defineProperty because Node 21 and later have a
  // read-only `navigator` of their own.
  Object.defineProperty(globalThis, name, {
    value: typeof value === 'function' && /^[a-z]/.test(name) ? value.bind(window) : value,
    configurable: true,
    writable: true
  })
}

/** A new element in the page, for one editor to live in. */
export const mount = () => window.document.body.appendChild(window.document.createElement('div'))
