import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// base './': the build works at any path (the demo serves it at /react/).
// `npm run dev` proxies the API to a running reference server (TOKEN_SERVER, default :8080; start it
// with `--test-controls --cors-origin http://localhost:5173`, see ../dashboard/vite.config.js).
const target = process.env.TOKEN_SERVER ?? 'http://127.0.0.1:8080';
const api = ['/auth', '/statistics', '/other-statistics', '/event-more-statistics', '/final-statistics', '/__control'];

export default defineConfig({
  base: './',
  plugins: [react()],
  // Pre-bundling would move token-broker's JS away from its .wasm file; keep it as published.
  optimizeDeps: { exclude: ['token-broker'] },
  server: {
    proxy: Object.fromEntries(api.map((path) => [path, target])),
    fs: { allow: ['..'] }, // ../shared: the timeline model and actions both examples use
  },
});
