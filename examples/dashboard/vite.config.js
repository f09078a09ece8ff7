import { defineConfig } from 'vite';
import vue from '@vitejs/plugin-vue';

// `npm run build` is all the demo needs (the reference server serves dist/).
// `npm run dev` works too: start the server (`npm run server -- --port 8080 --test-controls
// --cors-origin http://localhost:5173` at the repository root) and Vite proxies the API to it. The
// proxy forwards the page's Origin, and the server only allows its own origins unless told more.
const target = process.env.TOKEN_SERVER ?? 'http://127.0.0.1:8080';
const api = ['/auth', '/statistics', '/other-statistics', '/event-more-statistics', '/final-statistics', '/__control'];

export default defineConfig({
  plugins: [vue()],
  // Pre-bundling would move token-broker's JS away from its .wasm file; keep it as published.
  optimizeDeps: { exclude: ['token-broker'] },
  server: {
    proxy: { ...Object.fromEntries(api.map((path) => [path, target])), '/ws': { target, ws: true } },
    fs: { allow: ['..'] }, // ../shared: the timeline model and actions both examples use
  },
});
