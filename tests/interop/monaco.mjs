// Monaco bound with y-monaco to the `content` text, in a real headless Chromium driven by
// playwright-core: the page (monaco_page.mjs, Monaco + y-monaco + yjs + y-websocket) is
// bundled by esbuild into a temporary folder and served from 127.0.0.1. Two pages, ada's
// and bob's, each with its own Y.Doc and WebsocketProvider, edit one document through
// the server. Keystrokes typed into a's editor reach b's; a's selection is drawn in b
// (y-monaco's decorations, from awareness); a plain provider in Node (no browser) gets
// the text from the server and its edit reaches both editors; keystrokes in b reach a;
// a third page opened last gets the whole text.
//
// options: {url, room, token, chromium (the browser's executable), deadlineMs?}
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { dirname, extname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import * as esbuild from 'esbuild'
import { chromium as playwright } from 'playwright-core'
import { connect, main, synced, waitFor } from './lib.mjs'

const HERE = dirname(fileURLToPath(import.meta.url))
const WAIT_MS = 10000
const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'
]
// y-monaco ships no style for the remote selections it decorates: its demo's.
const PAGE = `<!DOCTYPE html>
<html><head><meta charset="utf-8">
<link rel="icon" href="data:,"><link rel="stylesheet" href="page.css">
<style>
  #editor { width: 800px; height: 300px }
  .yRemoteSelection { background-color: rgba(250, 129, 0, 0.5) }
  .yRemoteSelectionHead { position: absolute; height: 100%; border-left: 2px solid orange }
</style></head>
<body><div id="editor"></div><script type="module" src="page.js"></script></body></html>
`
const TYPES = {
  '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.ttf': 'font/ttf'
}

/** Bundle the page and Monaco's editor worker into `dir`, beside index.html. */
const bundle = async (dir) => {
  await esbuild.build({
    absWorkingDir: HERE,
    entryPoints: {
      page: 'monaco_page.mjs',
      'editor.worker': 'monaco-editor/editor/editor.worker.js'
    },
    bundle: true,
    format: 'esm',
    outdir: dir,
    loader: { '.ttf': 'file' },
    // y-monaco 0.1.6 imports this path, which monaco-editor 0.57's `exports` maps to
    // esm/vs/esm/vs/... (no such file): point it at the module `monaco-editor` re-exports.
    alias: { 'monaco-editor/esm/vs/editor/editor.api.js': 'monaco-editor/editor/editor.api.js' },
    logLevel: 'silent'
  })
  await writeFile(join(dir, 'index.html'), PAGE)
}

/** Serve the files of `dir` on 127.0.0.1; resolves to the server once it listens. */
const serve = (dir) =>
  new Promise((resolve, reject) => {
    const server = createServer((request, response) => {
      // (URL resolves `..` segments: the path stays inside `dir`)
      const name = new URL(request.url, 'http://localhost').pathname.replace(/^\/+/, '')
      const type = TYPES[extname(name)] || 'application/octet-stream'
      readFile(join(dir, name)).then(
        (body) => response.writeHead(200, { 'Content-Type': type }).end(body),
        () => response.writeHead(404).end()
      )
    })
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => resolve(server))
  })

/** Resolve once `predicate(arg)` holds in `page`; fail saying what was awaited. */
const until = (page, predicate, arg, what) =>
  page.waitForFunction(predicate, arg, { timeout: WAIT_MS }).catch(() => {
    throw new Error(`timed out after ${WAIT_MS} ms waiting for ${what}`)
  })

/** A page with an editor for `user`, synced with the server; its uncaught errors and
 * console errors are collected in `errors`. */
const openEditor = async (context, site, { url, room, token }, user, errors) => {
  const page = await context.newPage()
  page.on('pageerror', (err) => errors.push(`${user.name}: ${err.stack || err}`))
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(`${user.name}: console.error: ${message.text()}`)
  })
  const query = new URLSearchParams({ url, room, token, ...user })
  await page.goto(`${site}/index.html?${query}`)
  const ready = () => window.weft?.provider?.wsconnected && window.weft.provider.synced
  await until(page, ready, null, `${user.name}'s page to sync`)
  return page
}

/** `window.weft[name]` in `page`. */
const read = (page, name) => page.evaluate((key) => window.weft[key], name)

const value = (page) => page.evaluate(() => window.weft.editor.getValue())

/** Resolve once `page`'s editor shows `text`; fail saying what it shows instead. */
const shows = (page, text, what) =>
  until(page, (t) => window.weft.editor.getValue() === t, text, what).catch(async (err) => {
    throw new Error(`${err.message}: the editor shows ${JSON.stringify(await value(page))}`)
  })

/** The remote selection y-monaco decorates in `page`'s editor for the Yjs client `id`:
 * its range, whether its elements are in the page's DOM (drawn), and the user that
 * client's awareness names. */
const remoteSelection = (page, id) =>
  page.evaluate((clientID) => {
    const decoration = window.weft.editor.getModel().getAllDecorations()
      .find((d) => d.options.className === `yRemoteSelection yRemoteSelection-${clientID}`)
    if (!decoration) return null
    const dom = window.weft.editor.getDomNode()
    return {
      range: decoration.range,
      drawn: dom.querySelector(`.yRemoteSelection-${clientID}`) !== null &&
        dom.querySelector(`.yRemoteSelectionHead-${clientID}`) !== null,
      user: window.weft.provider.awareness.getStates().get(clientID)?.user ?? null
    }
  }, id)

/** Type into a's editor as a person does (click into it, keystrokes, Enter, Backspace),
 * then select the second line (Shift+Home): b shows the text and draws the selection. */
const typeInA = async (pageA, pageB) => {
  await pageA.click('.monaco-editor .view-lines')
  await pageA.keyboard.type('Hello from Monaco\nline 2x')
  await pageA.keyboard.press('Backspace')
  const typed = await value(pageA)
  const started = Date.now()
  await shows(pageB, typed, "the typing in a's editor to show in b's")
  const typedMs = Date.now() - started

  await pageA.keyboard.press('Shift+Home')
  const idA = await pageA.evaluate(() => window.weft.doc.clientID)
  const drawn = (id) => document.querySelector(`.yRemoteSelection-${id}`) !== null
  await until(pageB, drawn, idA, "a's selection to be drawn in b")
  return { typed, typedMs, selection: await remoteSelection(pageB, idA) }
}

const editorRun = async (context, site, options, cleanup) => {
  const errors = []
  const pageA = await openEditor(context, site, options, { name: 'ada', color: '#ff0000' }, errors)
  const pageB = await openEditor(context, site, options, { name: 'bob', color: '#0000ff' }, errors)
  const { typed, typedMs, selection } = await typeInA(pageA, pageB)

  // A client with no editor and no browser joins (the server serves it the text) and
  // appends a line; both editors show it.
  const plain = connect(options.url, options.room, { token: options.token, name: 'plain' })
  cleanup.push(plain)
  await synced(plain)
  await waitFor(() => plain.text.toString() === typed, 'the plain provider to receive the text')
  plain.text.insert(plain.text.length, '\n// from a plain provider')
  const withPlain = typed + '\n// from a plain provider'
  await shows(pageA, withPlain, "the plain provider's line to show in a's editor")
  await shows(pageB, withPlain, "the plain provider's line to show in b's editor")

  // Keystrokes in b's editor, at the end of the text, reach a and the plain provider.
  await pageB.click('.monaco-editor .view-lines')
  await pageB.keyboard.press('Control+End')
  await pageB.keyboard.type('\nbob was here')
  const final = await value(pageB)
  await shows(pageA, final, "b's typing to show in a's editor")
  await waitFor(() => plain.text.toString() === final, "b's typing to reach the plain provider")

  // A page opened last gets the whole text from the server.
  const pageC = await openEditor(context, site, options, { name: 'cy', color: '#00ff00' }, errors)
  await shows(pageC, final, 'the late page to show the text')

  // Monaco's editor worker started in every page and answered.
  const pages = [pageA, pageB, pageC]
  const answered = () => window.weft.workerReplies > 0
  for (const page of pages) await until(page, answered, null, "a reply from Monaco's editor worker")
  const all = async (name) => (await Promise.all(pages.map((page) => read(page, name)))).flat()
  return {
    typed,
    typedMs,
    selection,
    a: await value(pageA),
    b: await value(pageB),
    late: await value(pageC),
    plain: plain.text.toString(),
    workers: await all('workers'),
    workerErrors: await all('workerErrors'),
    pageErrors: errors,
    closes: [...(await all('closes')), ...plain.closes]
  }
}

main(async ({ url, room, token, chromium }, cleanup) => {
  const dir = await mkdtemp(join(tmpdir(), 'weft-monaco-'))
  let site = null
  let context = null
  try {
    await bundle(dir)
    site = await serve(dir)
    context = await playwright.launchPersistentContext(join(dir, 'profile'), {
      executablePath: chromium,
      headless: true,
      args: ARGS
    })
    const origin = `http://127.0.0.1:${site.address().port}`
    return await editorRun(context, origin, { url, room, token }, cleanup)
  } finally {
    if (context !== null) await context.close()
    if (site !== null) site.close()
    await rm(dir, { recursive: true, force: true })
  }
})
