import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// Nothing for token-broker: no wasm plugin, no optimizeDeps or assetsInclude entry.
export default defineConfig({ plugins: [react()] });
