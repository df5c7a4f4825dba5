// Pages: / (the document list), /d/{doc} (the editor) and 404.html, built into dist/
// with content-hashed assets under dist/assets/ (served long-cached by collab).
import { resolve } from 'node:path'
import { defineConfig } from 'vite'

const backend = process.env.COLLAB_BACKEND || 'http://127.0.0.1:8080'

export default defineConfig({
  // Relative asset URLs: collab serves each page with <base href> naming where it
  // is mounted ("/" or e.g. "/collab/"), so one build works under any prefix.
  base: './',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    rollupOptions: {
      input: {
        index: resolve(import.meta.dirname, 'index.html'),
        editor: resolve(import.meta.dirname, 'editor.html'),
        notFound: resolve(import.meta.dirname, '404.html')
      }
    }
  },
  // Not pre-bundled, so that the caret-name fix below applies in `npm run dev` too.
  optimizeDeps: { exclude: ['y-codemirror.next'] },
  // `npm run dev`: live-reloading pages, with /ws and /api proxied to a running collab.
  server: {
    proxy: {
      '/api': backend,
      '/ws': { target: backend.replace(/^http/, 'ws'), ws: true },
      // The HTTP fallback (clients/collab-transport) where WebSockets are blocked.
      '/transport': backend,
      '/sse': backend,
      '/poll': backend,
      '/send': backend
    },
    // collab-transport is linked from ../clients (a file: dependency).
    fs: { allow: ['.', '../clients/collab-transport'] }
  },
  plugins: [
    {
      // y-codemirror.next 0.3.x compares remote carets by colour only, so a
      // renamed peer (or a new one with the same colour) keeps the old name tag:
      // compare the name too.  A no-op once upstream does.
      name: 'collab-caret-names',
      transform (code, id) {
        if (!id.split('?')[0].replaceAll('\\', '/').endsWith('/y-codemirror.next/src/y-remote-selections.js')) return null
        return code.replaceAll(
          'return widget.color === this.color\n',
          'return widget.color === this.color && widget.name === this.name\n'
        )
      }
    },
    {
      name: 'collab-editor-route',
      configureServer (server) {
        server.middlewares.use((req, _res, next) => {
          if (req.url && req.url.startsWith('/d/')) req.url = '/editor.html'
          next()
        })
      }
    }
  ]
})
