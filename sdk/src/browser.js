// Script-tag entry (dist/marketing.min.js, served at /sdk.js): sets
// window.marketing. apiUrl defaults to the origin the script came from.
import { createMarketing } from './core.js'
import { browserEnv } from './env.js'

if (!window.marketing || !window.marketing.init) {
  let origin
  try {
    origin = new URL(document.currentScript.src).origin
  } catch (err) {
    origin = undefined
  }
  window.marketing = createMarketing(browserEnv(origin))
}
