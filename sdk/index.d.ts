// Types of @marketing-platform/sdk.

export interface InitOptions {
  /** The workspace's public key (`pk_...`). */
  apiKey: string
  /** The tracking host, e.g. `https://track.example.com` (default: where /sdk.js was loaded from). */
  apiUrl?: string
  /** Log every call to the console. */
  debug?: boolean
  /** Send once this many calls are queued (default 20). */
  flushAt?: number
  /** ... or this many ms after the first queued call (default 1000). */
  flushInterval?: number
  /** Calls per request (default 100). */
  maxBatch?: number
  /** Calls kept in the persisted queue; the oldest go first (default 500). */
  maxQueue?: number
  /** First backoff ceiling in ms, doubled per failed try (default 500). */
  retryBase?: number
  /** Largest backoff ceiling in ms (default 30000). */
  retryMax?: number
}

export interface IdentifyData {
  email?: string
  userId?: string | number
  traits?: Record<string, unknown>
}

export type Properties = Record<string, unknown>

/** Every call resolves `true` once the server stored it, `false` when its
 * first try failed (it stays queued and is retried); none ever rejects. */
export interface Marketing {
  init(options: InitOptions): Promise<boolean>
  identify(data: IdentifyData): Promise<boolean>
  track(name: string, properties?: Properties): Promise<boolean>
  page(name?: string, properties?: Properties): Promise<boolean>
  alias(userId: string, previousId?: string): Promise<boolean>
  /** Logout: forget the user id and start a new anonymous id. */
  reset(): void
  /** Send everything queued now; resolves `true` when the queue is empty. */
  flush(): Promise<boolean>
  anonymousId(): string
  user(): { anonymousId: string; userId: string | null }
  queued(): number
}

export const VERSION: string
export const LIBRARY: string
export function createMarketing(env: unknown): Marketing
declare const marketing: Marketing
export default marketing
