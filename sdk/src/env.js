// The browser side of the SDK: storage, network, timers and page facts for
// src/core.js. Ids persist in localStorage, or in a first-party cookie where
// localStorage is unavailable (private modes, disabled storage); the queue
// persists in localStorage only (a cookie is sent with every request).

const YEAR = 31536000

function localStore() {
  try {
    const s = window.localStorage
    s.setItem('mp_probe', '1')
    s.removeItem('mp_probe')
    return s
  } catch (err) {
    return null
  }
}

function cookieGet(key) {
  const hit = document.cookie.split('; ').find((c) => c.indexOf(key + '=') === 0)
  return hit ? decodeURIComponent(hit.slice(key.length + 1)) : null
}

function cookieSet(key, value, maxAge) {
  document.cookie =
    key + '=' + encodeURIComponent(value) + '; path=/; max-age=' + maxAge + '; SameSite=Lax' +
    (location.protocol === 'https:' ? '; Secure' : '')
}

function makeStore() {
  const local = localStore()
  const memory = {}
  return {
    get(key, localOnly) {
      try {
        if (local) {
          const v = local.getItem(key)
          if (v != null || localOnly) return v
        }
        return localOnly ? memory[key] || null : cookieGet(key)
      } catch (err) {
        return memory[key] || null
      }
    },
    set(key, value, localOnly) {
      memory[key] = value
      try {
        if (local) local.setItem(key, value)
        else if (!localOnly) cookieSet(key, value, YEAR)
      } catch (err) {
        // Storage full or refused: the value lives in memory for this page.
      }
    },
    remove(key) {
      delete memory[key]
      try {
        if (local) local.removeItem(key)
        cookieSet(key, '', 0)
      } catch (err) {
        // Nothing stored to remove.
      }
    },
  }
}

function uuid() {
  const c = window.crypto
  if (c && c.randomUUID) return c.randomUUID()
  const b = new Uint8Array(16)
  if (c && c.getRandomValues) c.getRandomValues(b)
  else for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256)
  b[6] = (b[6] & 15) | 64
  b[8] = (b[8] & 63) | 128
  const h = Array.from(b, (x) => (x + 256).toString(16).slice(1)).join('')
  return h.slice(0, 8) + '-' + h.slice(8, 12) + '-' + h.slice(12, 16) + '-' + h.slice(16, 20) + '-' + h.slice(20)
}

function page() {
  return {
    path: location.pathname,
    url: location.href,
    referrer: document.referrer,
    title: document.title,
    search: location.search,
  }
}

function timezone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone
  } catch (err) {
    return undefined
  }
}

export function browserEnv(defaultApiUrl) {
  return {
    defaultApiUrl,
    store: makeStore(),
    fetch: (url, init) => window.fetch(url, init),
    beacon: (url, data) =>
      !!navigator.sendBeacon && navigator.sendBeacon(url, new Blob([data], { type: 'text/plain' })),
    setTimeout: (fn, ms) => setTimeout(fn, ms),
    clearTimeout: (t) => clearTimeout(t),
    now: () => Date.now(),
    random: () => Math.random(),
    uuid,
    page,
    context: (name, version) => ({
      library: { name, version },
      page: page(),
      userAgent: navigator.userAgent,
      locale: navigator.language,
      timezone: timezone(),
    }),
    onPageHide(fn) {
      window.addEventListener('pagehide', fn)
      // Mobile browsers may never fire pagehide for a backgrounded tab.
      document.addEventListener('visibilitychange', () => {
        if (document.visibilityState === 'hidden') fn()
      })
    },
    log: (...args) => console.log(...args),
  }
}
