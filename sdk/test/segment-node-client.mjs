// Used by tests/tracking/test_segment_libraries.py: Segment's own
// @segment/analytics-node (a devDependency), pointed at the tracking host,
// sends every call type; prints the HTTP statuses it got as JSON.
//   node segment-node-client.mjs <host> <writeKey> <prefix>
import { Analytics } from '@segment/analytics-node'

const [host, writeKey, prefix] = process.argv.slice(2)
const requests = []
const errors = []
const analytics = new Analytics({ writeKey, host, flushAt: 50, flushInterval: 200, maxRetries: 2 })
analytics.on('http_request', (req) => requests.push({ url: req.url, gzip: req.headers['Content-Encoding'] || null }))
analytics.on('http_response', (res) => {
  if (res.status !== 200) errors.push(`HTTP ${res.status}: ${res.body}`)
})
analytics.on('error', (err) => errors.push(String(err && (err.reason || err.code || err))))
analytics.on('call_after_close', () => errors.push('call after close'))

const userId = `${prefix}-user`
const context = { timezone: 'Asia/Tokyo' }
analytics.identify({ userId, anonymousId: `${prefix}-anon`, traits: { email: `${prefix}@example.com`, plan: 'pro' }, context })
analytics.track({ userId, event: 'Order Completed', properties: { revenue: 42.5 } })
analytics.page({ userId, name: 'Pricing', properties: { path: '/pricing' } })
analytics.screen({ userId, name: 'Cart', properties: { items: 2 } })
analytics.group({ userId, groupId: `${prefix}-org`, traits: { name: 'Acme', seats: 12 } })
analytics.alias({ userId, previousId: `${prefix}-old` })
for (let i = 0; i < 20; i++) analytics.track({ userId, event: 'Batched', properties: { i } })

await analytics.closeAndFlush({ timeout: 20000 })
console.log(JSON.stringify({ errors, requests }))
process.exit(errors.length ? 1 : 0)
