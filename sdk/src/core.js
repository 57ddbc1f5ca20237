// The SDK's logic, free of browser globals: everything it touches (storage,
// network, timers, clock, page facts) comes in through `env`, so the node
// unit tests drive it with fakes and the browser build passes the real ones
// (src/env.js).
//
// Delivery: every call becomes a message with a messageId (the server's
// idempotency key), is appended to a queue kept in localStorage (bounded)
// and sent in batches to `${apiUrl}/track/batch`. A batch leaves the queue
// only when the server answered 2xx, or a 4xx other than 429 (which no
// retry would change: a batch of several is split in halves first, so one
// bad call cannot drop the others). Network errors, 429 and 5xx are retried
// with exponential backoff and full jitter, for as long as the page lives;
// the persisted queue carries on after a reload. On pagehide the rest goes
// with navigator.sendBeacon (fetch with keepalive where that refuses).
// Retries and re-sends after a reload reuse the messageId, so the server
// stores each call once.

export const VERSION = '0.1.0'
export const LIBRARY = '@marketing-platform/sdk'

const DEFAULTS = {
  flushAt: 20, // send once this many calls are queued ...
  flushInterval: 1000, // ... or this many ms after the first one
  maxBatch: 100, // calls per request
  maxQueue: 500, // calls kept (oldest dropped past this)
  retryBase: 500, // ms: first backoff ceiling, doubled each attempt
  retryMax: 30000, // ms: backoff ceiling
}
const BEACON_BYTES = 60000 // browsers cap a page's in-flight beacon data at 64 KB

export function createMarketing(env) {
  let opts = null
  let queue = []
  let anonymousId = null
  let userId = null
  let timer = null
  let sending = false
  let inflight = null
  let hooked = false
  let attempt = 0
  let waiters = []

  const log = (...args) => {
    if (opts && opts.debug) env.log('[marketing]', ...args)
  }
  const qKey = () => 'mp_queue_' + opts.apiKey
  const persist = () => {
    if (opts) env.store.set(qKey(), JSON.stringify(queue), true)
  }

  function safe(fn) {
    // Nothing the SDK does may throw into the host page.
    return (...args) => {
      try {
        return fn(...args)
      } catch (err) {
        log('error', err)
        return Promise.resolve(false)
      }
    }
  }

  function ids() {
    if (!anonymousId) {
      anonymousId = env.store.get('mp_anonymous_id')
      if (!anonymousId) {
        anonymousId = env.uuid()
        env.store.set('mp_anonymous_id', anonymousId)
      }
      userId = env.store.get('mp_user_id') || null
    }
  }

  function enqueue(type, fields) {
    ids()
    const msg = {
      type,
      messageId: env.uuid(),
      timestamp: new Date(env.now()).toISOString(),
      anonymousId,
      context: env.context(LIBRARY, VERSION),
      ...fields,
    }
    if (userId && !msg.userId) msg.userId = userId
    log(type, msg)
    queue.push(msg)
    const done = new Promise((resolve) => waiters.push({ id: msg.messageId, resolve }))
    // Past the bound the oldest call is dropped (its promise answers false).
    if (queue.length > (opts ? opts.maxQueue : DEFAULTS.maxQueue)) settle([queue.shift()], false)
    persist()
    // During a backoff the retry timer sends everything queued.
    if (opts && !attempt) schedule(queue.length >= opts.flushAt ? 0 : opts.flushInterval)
    return done
  }

  function settle(messages, delivered) {
    const sent = new Set(messages.map((m) => m.messageId))
    waiters = waiters.filter((w) => {
      if (!sent.has(w.id)) return true
      w.resolve(delivered)
      return false
    })
  }

  function schedule(delay) {
    if (sending || (timer && delay > 0)) return
    if (timer) env.clearTimeout(timer)
    timer = env.setTimeout(() => {
      timer = null
      run()
    }, delay)
  }

  function body(batch) {
    return JSON.stringify({ writeKey: opts.apiKey, sentAt: new Date(env.now()).toISOString(), batch })
  }

  function remove(batch) {
    const sent = new Set(batch.map((m) => m.messageId))
    queue = queue.filter((m) => !sent.has(m.messageId))
    persist()
  }

  // One request; resolves to 'ok', 'drop' (a 4xx no retry will change) or
  // 'retry' (network error, 429, 5xx) with the server's Retry-After.
  async function post(batch) {
    let res
    try {
      // text/plain and the key in the body: a "simple" cross-origin
      // request, so the browser sends no preflight.
      res = await env.fetch(opts.apiUrl + '/track/batch', {
        method: 'POST',
        headers: { 'Content-Type': 'text/plain' },
        body: body(batch),
        credentials: 'omit',
      })
    } catch (err) {
      log('network error', err)
      return { outcome: 'retry' }
    }
    if (res.status < 300) return { outcome: 'ok' }
    if (res.status === 429 || res.status >= 500) {
      const after = Number(res.headers && res.headers.get && res.headers.get('Retry-After'))
      return { outcome: 'retry', after: after > 0 ? after * 1000 : 0 }
    }
    log('refused', res.status, batch)
    return { outcome: 'drop' }
  }

  // Sends a batch; on a 4xx (other than 429) splits it in halves until the
  // refused call is alone, and drops only that one.
  async function deliver(batch) {
    const result = await post(batch)
    if (result.outcome === 'retry') return result
    if (result.outcome === 'drop' && batch.length > 1) {
      const half = batch.length >> 1
      const first = await deliver(batch.slice(0, half))
      return first.outcome === 'retry' ? first : deliver(batch.slice(half))
    }
    remove(batch)
    settle(batch, result.outcome === 'ok')
    return { outcome: 'ok' }
  }

  function run() {
    if (!inflight) {
      inflight = flush()
        .catch((err) => {
          log('error', err)
          sending = false
          return false
        })
        .then((done) => {
          inflight = null
          return done
        })
    }
    return inflight
  }

  async function flush() {
    if (!opts || sending || !queue.length) return !queue.length
    sending = true
    if (timer) env.clearTimeout(timer)
    timer = null
    let result = { outcome: 'ok' }
    try {
      while (queue.length && result.outcome === 'ok') {
        result = await deliver(queue.slice(0, opts.maxBatch))
      }
    } finally {
      sending = false
    }
    if (result.outcome === 'retry') {
      // Exponential backoff with full jitter, or the server's Retry-After.
      const ceiling = Math.min(opts.retryMax, opts.retryBase * 2 ** attempt)
      const delay = Math.max(result.after || 0, Math.floor(env.random() * ceiling))
      attempt = Math.min(attempt + 1, 30)
      log('retry in', delay, 'ms')
      // The first try failed: the calls stay queued; their promises answer now.
      settle(queue, false)
      schedule(delay)
      return false
    }
    attempt = 0
    if (queue.length) schedule(opts.flushInterval)
    return true
  }

  // pagehide: hand the whole queue to the browser, which sends it after the
  // page is gone. A chunk the browser accepted leaves the queue, unless the
  // API was failing (a backoff is running): then the calls also stay
  // persisted for the next page, whose re-send the server deduplicates by
  // messageId. A chunk the browser refused stays persisted too.
  function unload() {
    if (!opts || !queue.length) return
    let chunk = []
    const send = () => {
      if (!chunk.length) return
      const data = body(chunk)
      let ok = false
      try {
        ok = env.beacon(opts.apiUrl + '/track/batch', data)
      } catch (err) {
        ok = false
      }
      if (!ok) {
        try {
          env.fetch(opts.apiUrl + '/track/batch', {
            method: 'POST',
            headers: { 'Content-Type': 'text/plain' },
            body: data,
            credentials: 'omit',
            keepalive: true,
          }).catch(() => {})
          ok = data.length < BEACON_BYTES
        } catch (err) {
          ok = false
        }
      }
      if (ok && !attempt) {
        remove(chunk)
        settle(chunk, true)
      }
      chunk = []
    }
    for (const msg of queue.slice()) {
      if (body([...chunk, msg]).length > BEACON_BYTES) send()
      chunk.push(msg)
    }
    send()
  }

  const api = {
    init: safe((options) => {
      if (!options || !options.apiKey) throw new Error('init needs { apiKey }')
      opts = { ...DEFAULTS, ...options }
      opts.apiUrl = String(opts.apiUrl || env.defaultApiUrl || '').replace(/\/+$/, '')
      // Calls made before init join the queue persisted by the last page.
      const stored = env.store.get(qKey(), true)
      let saved = []
      try {
        saved = stored ? JSON.parse(stored) : []
      } catch (err) {
        saved = []
      }
      const seen = new Set(saved.map((m) => m.messageId))
      queue = [...saved, ...queue.filter((m) => !seen.has(m.messageId))].slice(-opts.maxQueue)
      persist()
      if (!hooked) env.onPageHide(unload)
      hooked = true
      log('init', opts.apiUrl, queue.length + ' queued')
      if (queue.length) schedule(0)
      return Promise.resolve(true)
    }),
    identify: safe((data = {}) => {
      const fields = { traits: data.traits || {} }
      if (data.email) fields.email = data.email
      if (data.userId != null) {
        ids()
        userId = String(data.userId)
        env.store.set('mp_user_id', userId)
        fields.userId = userId
      }
      return enqueue('identify', fields)
    }),
    track: safe((name, properties) => enqueue('track', { event: name, properties: properties || {} })),
    page: safe((name, properties) => {
      const fields = { properties: { ...env.page(), ...(properties || {}) } }
      if (name) fields.name = name
      return enqueue('page', fields)
    }),
    alias: safe((newUserId, previousId) => {
      ids()
      const previous = previousId || userId || anonymousId
      userId = String(newUserId)
      env.store.set('mp_user_id', userId)
      return enqueue('alias', { userId, previousId: previous })
    }),
    reset: safe(() => {
      // Logout: forget the person; the next call starts a new anonymous id.
      env.store.remove('mp_user_id')
      env.store.remove('mp_anonymous_id')
      userId = null
      anonymousId = null
      ids()
      log('reset', anonymousId)
    }),
    // Waits for a send under way, then sends what is left.
    flush: safe(() => (inflight ? inflight.then(() => run()) : run())),
    anonymousId: safe(() => {
      ids()
      return anonymousId
    }),
    user: safe(() => {
      ids()
      return { anonymousId, userId }
    }),
    queued: () => queue.length,
  }
  return api
}
