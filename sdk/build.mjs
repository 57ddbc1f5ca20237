// Builds dist/marketing.min.js (the script served at /sdk.js) from src/ and
// reports its minified + gzipped size. The build is committed, so
// `./mp up` needs no Node; test/build.test.js fails when it is stale.
//   node build.mjs          write dist/marketing.min.js
//   node build.mjs --check  exit 1 if dist/ differs from a fresh build
import { build } from 'esbuild'
import { readFileSync, writeFileSync } from 'node:fs'
import { gzipSync } from 'node:zlib'

const OUT = new URL('./dist/marketing.min.js', import.meta.url)

export async function bundle() {
  const result = await build({
    entryPoints: [new URL('./src/browser.js', import.meta.url).pathname],
    bundle: true,
    minify: true,
    format: 'iife',
    target: ['es2018'],
    legalComments: 'none',
    write: false,
    banner: { js: '/*! @marketing-platform/sdk | Apache-2.0 */' },
  })
  return result.outputFiles[0].text
}

export function gzippedSize(text) {
  return gzipSync(Buffer.from(text), { level: 9 }).length
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const text = await bundle()
  if (process.argv.includes('--check')) {
    const current = readFileSync(OUT, 'utf8')
    if (current !== text) {
      console.error('dist/marketing.min.js is stale: run `npm run build` in sdk/')
      process.exit(1)
    }
  } else {
    writeFileSync(OUT, text)
  }
  console.log(`dist/marketing.min.js: ${text.length} bytes minified, ${gzippedSize(text)} bytes gzipped`)
}
