// Shared helpers for the interop scripts: the official Yjs client stack against weft.
//
// Every script takes one JSON argument (its options), prints JSON lines on stdout (the
// last one is the result the Python test asserts on) and exits 0; on any error it prints
// {"ok": false, "error": "..."} and exits 1. Every wait has a timeout, and the whole
// script has a deadline (options.deadlineMs, default 30 s) after which it exits 1.

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

export { Y }

/** Print one JSON line on stdout. */
export const emit = (obj) => {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

/**
 * A Y.Doc with a WebsocketProvider on `serverUrl` + '/' + `room`.
 * BroadcastChannel is disabled: Node has one, and providers of the same room in one
 * process would otherwise sync with each other without the server.
 */
export const connect = (serverUrl, room, { token = null, connect = true, name = 'peer' } = {}) => {
  const doc = new Y.Doc()
  const params = token === null ? {} : { token }
  const provider = new WebsocketProvider(serverUrl, room, doc, {
    connect,
    params,
    WebSocketPolyfill: WebSocket,
    disableBc: true,
    maxBackoffTime: 500
  })
  const peer = {
    name,
    doc,
    provider,
    text: doc.getText('content'),
    closes: [],
    denied: []
  }
  provider.on('connection-close', (event) => {
    peer.closes.push(event === null ? null : { code: event.code, reason: String(event.reason) })
  })
  // y-websocket only console.warn()s a permission-denied message: record it as well.
  const authHandler = provider.messageHandlers[2]
  provider.messageHandlers[2] = (encoder, decoder, prov, emitSynced, type) => {
    const captured = { reason: null }
    const warn = console.warn
    console.warn = (msg) => { captured.reason = String(msg) }
    try {
      authHandler(encoder, decoder, prov, emitSynced, type)
    } finally {
      console.warn = warn
    }
    peer.denied.push(captured.reason)
  }
  return peer
}

/** Resolve once `predicate()` holds; reject after `timeoutMs` saying what was awaited. */
export const waitFor = (predicate, what, timeoutMs = 10000) =>
  new Promise((resolve, reject) => {
    const started = Date.now()
    const check = () => {
      let ok = false
      try {
        ok = predicate()
      } catch (err) {
        reject(err)
        return
      }
      if (ok) {
        resolve(Date.now() - started)
      } else if (Date.now() - started > timeoutMs) {
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`))
      } else {
        setTimeout(check, 5)
      }
    }
    check()
  })

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

export const synced = (peer, timeoutMs = 10000) =>
  waitFor(() => peer.provider.wsconnected && peer.provider.synced, `${peer.name} to sync`, timeoutMs)

/** Peers `a` and `b` on `room`, synced, each with an editor `makeEditor(peer, user)`
 * for its user (ada, bob): `[a, b, editorA, editorB]`. The peers go on `cleanup`. */
export const twoEditors = async ({ url, room, token }, cleanup, makeEditor) => {
  const a = connect(url, room, { token, name: 'a' })
  const b = connect(url, room, { token, name: 'b' })
  cleanup.push(a, b)
  await Promise.all([synced(a), synced(b)])
  return [a, b, makeEditor(a, { name: 'ada', color: '#ff0000' }), makeEditor(b, { name: 'bob', color: '#0000ff' })]
}

/** Wait until every peer holds the same text (and, if given, `expected`). */
export const converged = (peers, timeoutMs = 10000, expected = null) =>
  waitFor(() => {
    const first = peers[0].text.toString()
    if (expected !== null && first !== expected) return false
    return peers.every((p) => p.text.toString() === first)
  }, `${peers.map((p) => p.name).join(' and ')} to converge`, timeoutMs)

/** Read the next line of stdin (the Python side's go-ahead), with a timeout. */
export const readLine = (what, timeoutMs = 30000) =>
  new Promise((resolve, reject) => {
    let buffered = ''
    const timer = setTimeout(() => {
      process.stdin.off('data', onData)
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} on stdin`))
    }, timeoutMs)
    const onData = (chunk) => {
      buffered += chunk.toString()
      const end = buffered.indexOf('\n')
      if (end >= 0) {
        clearTimeout(timer)
        process.stdin.off('data', onData)
        process.stdin.pause()
        resolve(buffered.slice(0, end))
      }
    }
    process.stdin.resume()
    process.stdin.on('data', onData)
  })

/**
 * Run `body(options)` with the options from argv[2]; print its result as the last JSON
 * line. Providers registered in `cleanup` are destroyed before exit.
 */
export const main = (body) => {
  const options = JSON.parse(process.argv[2] || '{}')
  const deadline = setTimeout(() => {
    emit({ ok: false, error: `script deadline of ${options.deadlineMs || 30000} ms passed` })
    process.exit(1)
  }, options.deadlineMs || 30000)
  const cleanup = []
  body(options, cleanup)
    .then((result) => {
      emit({ ok: true, ...result }) // before destroy(), which adds close events
      for (const peer of cleanup) peer.provider.destroy()
      clearTimeout(deadline)
      // Let the close frames go out, then stop (nothing else should keep us alive).
      setTimeout(() => process.exit(0), 50)
    })
    .catch((err) => {
      emit({ ok: false, error: String(err && err.stack ? err.stack : err) })
      process.exit(1)
    })
}
