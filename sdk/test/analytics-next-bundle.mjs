// Used by tests/sdk/test_analytics_next.py: bundles Segment's own
// analytics.js (@segment/analytics-next, a devDependency) for a page, with
// every lazily loaded chunk inlined, so the browser loads nothing from
// Segment's CDN. Prints the bundle.  node analytics-next-bundle.mjs
import { build } from 'esbuild'

const result = await build({
  stdin: {
    contents: "import { AnalyticsBrowser } from '@segment/analytics-next'\nwindow.AnalyticsBrowser = AnalyticsBrowser\n",
    resolveDir: new URL('.', import.meta.url).pathname,
  },
  bundle: true,
  format: 'iife',
  platform: 'browser',
  write: false,
  logLevel: 'error',
})
process.stdout.write(result.outputFiles[0].text)
