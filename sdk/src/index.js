// ESM entry: `import marketing from '@marketing-platform/sdk'`.
import { createMarketing, LIBRARY, VERSION } from './core.js'
import { browserEnv } from './env.js'

export { createMarketing, LIBRARY, VERSION, browserEnv }

const marketing = typeof window !== 'undefined' ? createMarketing(browserEnv()) : undefined
export default marketing
