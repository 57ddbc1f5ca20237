import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createMarketing, LIBRARY, VERSION } from '../src/core.js'
import { fakeEnv, settle } from './fake-env.js'

function started(env, options = {}) {
  const m = createMarketing(env)
  m.init({ apiKey: 'pk_test', apiUrl: 'https://track.example.com/', ...options })
  return m
}

test('every call carries a messageId, a timestamp, the anonymous id and context', async () => {
  const env = fakeEnv()
  const m = started(env)
  m.track('Viewed Product', { sku: 'A1' })
  m.page('Pricing')
  await env.advance(1000)
  assert.equal(env.requests.length, 1)
  const [{ url, body }] = env.requests
  assert.equal(url, 'https://track.example.com/track/batch')
  assert.equal(body.writeKey, 'pk_test')
  assert.ok(body.sentAt)
  const [track, page] = body.batch
  assert.equal(track.type, 'track')
  assert.equal(track.event, 'Viewed Product')
  assert.deepEqual(track.properties, { sku: 'A1' })
  assert.notEqual(track.messageId, page.messageId)
  assert.equal(track.anonymousId, page.anonymousId)
  assert.deepEqual(track.context['library'], { name: LIBRARY, version: VERSION })
  assert.equal(track.context.timezone, 'Europe/Paris')
  assert.equal(page.name, 'Pricing')
  assert.equal(page.properties.path, '/shop')
  assert.equal(track.timestamp, '2026-11-26T10:00:00.000Z')
})

test('calls queue and go in one batch after flushInterval, or at once at flushAt', async () => {
  const env = fakeEnv()
  const m = started(env, { flushAt: 3, flushInterval: 5000 })
  m.track('a')
  m.track('b')
  await env.advance(4000)
  assert.equal(env.requests.length, 0, 'nothing is sent before the interval')
  m.track('c')
  await env.advance(0)
  assert.equal(env.requests.length, 1, 'the third call flushes at once')
  assert.deepEqual(
    env.requests[0].body.batch.map((e) => e.event),
    ['a', 'b', 'c'],
  )
  assert.equal(m.queued(), 0)
})

test('a batch holds at most maxBatch calls; the rest follow', async () => {
  const env = fakeEnv()
  const m = started(env, { maxBatch: 2, flushAt: 100 })
  for (const e of ['a', 'b', 'c', 'd', 'e']) m.track(e)
  assert.equal(await m.flush(), true)
  assert.deepEqual(env.requests.map((r) => r.body.batch.length), [2, 2, 1])
})

test('the promise of a call resolves true once the server stored it', async () => {
  const env = fakeEnv()
  const m = started(env)
  const done = m.identify({ email: 'ada@example.com', userId: 'u1', traits: { plan: 'pro' } })
  await env.advance(1000)
  assert.equal(await done, true)
  const [identify] = env.requests[0].body.batch
  assert.equal(identify.type, 'identify')
  assert.equal(identify.userId, 'u1')
  assert.equal(identify.email, 'ada@example.com')
  assert.deepEqual(identify.traits, { plan: 'pro' })
})

test('network errors, 429 and 5xx retry with growing jittered backoff; the same messageIds go again', async () => {
  const env = fakeEnv({ answers: ['network', 503, { status: 429, headers: {} }, 500] })
  env.randomValue = 0.999
  const m = started(env, { retryBase: 100, retryMax: 1000 })
  const done = m.track('Paid')
  await env.advance(1000)
  assert.equal(await done, false, 'the first try failed: the promise answers, the call stays queued')
  const delays = []
  for (let i = 0; i < 4; i++) {
    delays.push(env.pendingDelays()[0])
    await env.advance(env.pendingDelays()[0])
  }
  assert.equal(env.requests.length, 5)
  assert.deepEqual(delays, [99, 199, 399, 799], 'full jitter under 100 * 2^n')
  assert.equal(new Set(env.sentIds()).size, 1, 'every try sends the same messageId')
  assert.equal(m.queued(), 0)
  // Backoff resets after a success.
  env.answers.push('network')
  m.track('Again')
  await env.advance(1000)
  assert.equal(env.pendingDelays()[0], 99)
})

test('the ceiling stops growing at retryMax, and jitter spreads the delay below it', async () => {
  const env = fakeEnv({ answers: Array(12).fill(502) })
  const m = started(env, { retryBase: 100, retryMax: 1000 })
  m.track('x')
  await env.advance(1000)
  const seen = []
  for (let i = 0; i < 10; i++) {
    env.randomValue = i % 2 ? 0.999 : 0.1
    const [delay] = env.pendingDelays()
    seen.push(delay)
    await env.advance(delay)
  }
  assert.ok(Math.max(...seen) <= 1000)
  assert.ok(seen.includes(999) && seen.some((d) => d < 200))
})

test('Retry-After of a 429 is honoured', async () => {
  const env = fakeEnv({ answers: [{ status: 429, headers: { 'Retry-After': '7' } }] })
  env.randomValue = 0
  const m = started(env)
  m.track('x')
  await env.advance(1000)
  assert.deepEqual(env.pendingDelays(), [7000])
})

test('other 4xx are never retried; a refused batch is split so only the bad call is dropped', async () => {
  const env = fakeEnv({ answers: [422, 200, 422, 422, 200] })
  const m = started(env, { flushAt: 100 })
  for (const e of ['a', 'b', 'c', 'd']) m.track(e)
  await m.flush()
  // [a b c d] 422 -> [a b] 200, [c d] 422 -> [c] 422 (dropped), [d] 200
  assert.deepEqual(
    env.requests.map((r) => r.body.batch.map((e) => e.event).join('')),
    ['abcd', 'ab', 'cd', 'c', 'd'],
  )
  assert.equal(m.queued(), 0)
  await env.advance(60000)
  assert.equal(env.requests.length, 5, 'no retry after a 4xx')
})

test('401 drops the call without retrying', async () => {
  const env = fakeEnv({ answers: [401] })
  const m = started(env)
  const done = m.track('x')
  await env.advance(1000)
  assert.equal(await done, false)
  await env.advance(60000)
  assert.equal(env.requests.length, 1)
  assert.equal(m.queued(), 0)
})

test('the anonymous id and user id persist across page loads; the queue survives a reload', async () => {
  const storage = new Map()
  const first = fakeEnv({ storage, answers: ['network'] })
  const a = started(first)
  a.identify({ userId: 'u7' })
  a.track('Added to Cart')
  await first.advance(1000) // fails: both stay queued
  const anon = a.anonymousId()
  assert.equal(JSON.parse(storage.get('mp_queue_pk_test')).length, 2)

  // A reload: a new instance over the same storage.
  const second = fakeEnv({ storage })
  const b = started(second)
  assert.equal(b.anonymousId(), anon)
  b.track('Checkout')
  await second.advance(0)
  await second.advance(1000)
  const sent = second.requests.flatMap((r) => r.body.batch)
  assert.deepEqual(
    sent.map((e) => e.type + ':' + (e.event || '')),
    ['identify:', 'track:Added to Cart', 'track:Checkout'],
  )
  assert.ok(sent.every((e) => e.anonymousId === anon && e.userId === 'u7'))
  assert.equal(JSON.parse(storage.get('mp_queue_pk_test')).length, 0)
})

test('the persisted queue is bounded: the oldest calls go first', async () => {
  const env = fakeEnv({ answers: Array(10).fill('network') })
  const m = started(env, { maxQueue: 5, flushAt: 100 })
  const calls = []
  for (let i = 0; i < 8; i++) calls.push(m.track('e' + i))
  const stored = JSON.parse(env.storage.get('mp_queue_pk_test'))
  assert.deepEqual(stored.map((e) => e.event), ['e3', 'e4', 'e5', 'e6', 'e7'])
  assert.deepEqual(await Promise.all(calls.slice(0, 3)), [false, false, false])
})

test('reset starts a new anonymous id and forgets the user id', async () => {
  const env = fakeEnv()
  const m = started(env)
  m.identify({ userId: 'u1' })
  const before = m.anonymousId()
  m.reset()
  const after = m.anonymousId()
  assert.notEqual(after, before)
  assert.equal(m.user().userId, null)
  m.track('After Logout')
  await env.advance(1000)
  const [identify, track] = env.requests[0].body.batch
  assert.equal(identify.anonymousId, before)
  assert.equal(track.anonymousId, after)
  assert.equal(track.userId, undefined)
  assert.equal(env.storage.get('mp_anonymous_id'), after)
})

test('alias links the previous id to the new user id', async () => {
  const env = fakeEnv()
  const m = started(env)
  const anon = m.anonymousId()
  m.alias('u9')
  m.track('x')
  await env.advance(1000)
  const [alias, track] = env.requests[0].body.batch
  assert.deepEqual([alias.type, alias.userId, alias.previousId], ['alias', 'u9', anon])
  assert.equal(track.userId, 'u9')
})

test('pagehide hands the queue to sendBeacon; a refused beacon falls back to fetch keepalive', async () => {
  const env = fakeEnv()
  const m = started(env, { flushInterval: 60000 })
  m.track('a')
  m.track('b')
  env.pageHide()
  assert.equal(env.beacons.length, 1)
  assert.equal(env.beacons[0].url, 'https://track.example.com/track/batch')
  assert.equal(env.beacons[0].body.writeKey, 'pk_test')
  assert.deepEqual(env.beacons[0].body.batch.map((e) => e.event), ['a', 'b'])
  assert.equal(m.queued(), 0)

  env.beaconAccepts = false
  m.track('c')
  env.pageHide()
  await settle()
  assert.equal(env.requests.length, 1)
  assert.equal(env.requests[0].keepalive, true)
  assert.deepEqual(env.requests[0].body.batch.map((e) => e.event), ['c'])
})

test('a large queue goes in several beacons under the 64 KB limit', async () => {
  const env = fakeEnv()
  const m = started(env, { flushInterval: 60000, flushAt: 1000 })
  for (let i = 0; i < 60; i++) m.track('big', { blob: 'x'.repeat(2000) })
  env.pageHide()
  assert.ok(env.beacons.length >= 2)
  assert.equal(env.beacons.flatMap((b) => b.body.batch).length, 60)
  assert.ok(env.beacons.every((b) => JSON.stringify(b.body).length <= 60000))
})

test('errors never reach the host page', async () => {
  const env = fakeEnv()
  env.fetch = () => {
    throw new Error('boom')
  }
  const m = createMarketing(env)
  assert.doesNotThrow(() => m.init())
  const r = m.init({ apiKey: 'pk_test', apiUrl: 'https://t.example.com' })
  assert.ok(r instanceof Promise)
  const call = m.track('x')
  assert.equal(await m.flush(), false, 'a throwing fetch counts as a network error')
  assert.equal(await call, false)
  env.store.set = () => {
    throw new Error('quota')
  }
  m.reset()
  assert.equal(await m.track('y'), false, 'a throwing storage fails the call, not the page')
})

test('debug logs every call', async () => {
  const env = fakeEnv()
  const m = started(env, { debug: true })
  m.track('Logged')
  assert.ok(env.logs.some((args) => args[0] === '[marketing]' && args[1] === 'track'))
})

test('flush waits for a send under way, then sends the rest', async () => {
  const env = fakeEnv()
  let release
  const gate = new Promise((r) => (release = r))
  const fetch = env.fetch
  env.fetch = async (url, init) => {
    if (env.requests.length === 0) await gate
    return fetch(url, init)
  }
  const m = started(env, { flushAt: 1 })
  m.track('first')
  await env.advance(0) // the first send is under way, held at the gate
  m.track('second')
  const flushed = m.flush()
  release()
  assert.equal(await flushed, true)
  assert.equal(m.queued(), 0)
  assert.deepEqual(env.sentIds().length, 2)
})

test('init twice hooks pagehide once', () => {
  const env = fakeEnv()
  let hooks = 0
  env.onPageHide = () => hooks++
  const m = createMarketing(env)
  m.init({ apiKey: 'pk_test' })
  m.init({ apiKey: 'pk_test' })
  assert.equal(hooks, 1)
})
