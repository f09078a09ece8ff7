import { defineConfig } from 'vite';
import vue from '@vitejs/plugin-vue';

// Nothing for token-broker: no wasm plugin, no optimizeDeps or assetsInclude entry.
export default defineConfig({ plugins: [vue()] });
