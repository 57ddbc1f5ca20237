// A fake of src/env.js for the unit tests: a manual clock, scripted network
// answers, and a storage map shared between "page loads".
export function fakeEnv({ storage = new Map(), answers = [] } = {}) {
  const timers = []
  let now = Date.parse('2026-11-26T10:00:00Z')
  let seq = 0
  const env = {
    storage,
    requests: [], // { url, body (parsed), keepalive }
    beacons: [],
    answers, // queue of statuses or 'network'; empty → 200
    beaconAccepts: true,
    logs: [],
    defaultApiUrl: 'https://track.example.com',
    store: {
      get: (k) => (storage.has(k) ? storage.get(k) : null),
      set: (k, v) => storage.set(k, v),
      remove: (k) => storage.delete(k),
    },
    fetch: async (url, init) => {
      env.requests.push({ url, body: JSON.parse(init.body), keepalive: !!init.keepalive, init })
      const answer = env.answers.length ? env.answers.shift() : 200
      if (answer === 'network') throw new TypeError('Failed to fetch')
      const status = typeof answer === 'number' ? answer : answer.status
      const headers = new Map(Object.entries((answer && answer.headers) || {}))
      return { status, headers: { get: (k) => headers.get(k) ?? null } }
    },
    beacon: (url, data) => {
      env.beacons.push({ url, body: JSON.parse(data) })
      return env.beaconAccepts
    },
    setTimeout: (fn, ms) => {
      const t = { at: now + ms, fn, ms }
      timers.push(t)
      return t
    },
    clearTimeout: (t) => {
      const i = timers.indexOf(t)
      if (i >= 0) timers.splice(i, 1)
    },
    now: () => now,
    random: () => env.randomValue,
    randomValue: 0.5,
    uuid: () => `id-${++seq}`,
    page: () => ({ path: '/shop', url: 'https://shop.example.com/shop', referrer: '', title: 'Shop', search: '' }),
    context: (name, version) => ({ library: { name, version }, timezone: 'Europe/Paris', locale: 'fr-FR' }),
    pageHide: null,
    onPageHide: (fn) => {
      env.pageHide = fn
    },
    log: (...args) => env.logs.push(args),
    timers,
    // Runs due timers (and the promises they start) as the clock moves on.
    async advance(ms) {
      const until = now + ms
      for (;;) {
        await settle()
        timers.sort((a, b) => a.at - b.at)
        const next = timers[0]
        if (!next || next.at > until) break
        timers.shift()
        now = Math.max(now, next.at)
        next.fn()
      }
      now = until
      await settle()
    },
    pendingDelays: () => timers.map((t) => t.ms),
    sentIds: () => env.requests.flatMap((r) => r.body.batch.map((m) => m.messageId)),
  }
  return env
}

export async function settle() {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r))
}
