/// <reference lib="webworker" />
/**
 * The service worker: caches the app shell so the app loads and mirrors
 * with the network cut. The build injects the list of files (PRECACHE) and
 * a version; a new version replaces the old cache once it is installed.
 */
declare const self: ServiceWorkerGlobalScope;
declare const PRECACHE: string[];
declare const VERSION: string;

const CACHE = `diskmirror-${VERSION}`;

self.addEventListener('install', (event) => {
  event.waitUntil(
    (async () => {
      const cache = await caches.open(CACHE);
      await cache.addAll(PRECACHE.map((path) => new URL(path, self.registration.scope).href));
      await self.skipWaiting();
    })(),
  );
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    (async () => {
      for (const key of await caches.keys()) if (key.startsWith('diskmirror-') && key !== CACHE) await caches.delete(key);
      await self.clients.claim();
    })(),
  );
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET' || new URL(request.url).origin !== self.location.origin) return;
  event.respondWith(
    (async () => {
      const cache = await caches.open(CACHE);
      // The page itself: network first (to see a new version), the cached shell when offline.
      if (request.mode === 'navigate') {
        try {
          return await fetch(request);
        } catch {
          return (await cache.match(new URL('./', self.registration.scope).href, { ignoreVary: true })) ?? Response.error();
        }
      }
      // Hashed assets never change: cache first.
      // ignoreVary: the server may vary on Origin, and module scripts carry one.
      const hit = await cache.match(request, { ignoreVary: true });
      if (hit) return hit;
      return fetch(request);
    })(),
  );
});
