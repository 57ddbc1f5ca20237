import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { bundle, gzippedSize } from '../build.mjs'

test('the committed browser build is what src/ builds to', async () => {
  const committed = readFileSync(new URL('../dist/marketing.min.js', import.meta.url), 'utf8')
  assert.equal(committed, await bundle(), 'dist/ is stale: run `npm run build` in sdk/ and commit it')
})

test('the browser build stays under 5 KB minified and gzipped', async () => {
  const size = gzippedSize(await bundle())
  console.log(`# dist/marketing.min.js: ${size} bytes min+gzip`)
  assert.ok(size < 5 * 1024, `${size} bytes`)
})

test('the package exposes ESM, the browser build and types', () => {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'))
  assert.equal(pkg.name, '@marketing-platform/sdk')
  assert.equal(pkg.type, 'module')
  assert.equal(pkg.exports['.'].import, './src/index.js')
  assert.equal(pkg.browser, './dist/marketing.min.js')
  assert.ok(readFileSync(new URL('../' + pkg.types, import.meta.url), 'utf8').includes('identify'))
})
