// Nothing for token-broker: no experiments.asyncWebAssembly, no wasm loader, no copy plugin.
// webpack 5 turns the glue's `new URL('token_broker_bg.wasm', import.meta.url)` into an asset.
const path = require('node:path');

/** Writes dist/index.html with the entry's scripts (instead of a dependency on html-webpack-plugin). */
class IndexHtml {
  apply(compiler) {
    compiler.hooks.thisCompilation.tap('IndexHtml', (compilation) => {
      compilation.hooks.processAssets.tap({ name: 'IndexHtml', stage: compiler.webpack.Compilation.PROCESS_ASSETS_STAGE_SUMMARIZE }, () => {
        const scripts = [...compilation.entrypoints.get('main').getFiles()].filter((f) => f.endsWith('.js'));
        const html = '<!doctype html>\n<html lang="en">\n<head><meta charset="utf-8"><title>token-broker + webpack 5</title>\n'
          + scripts.map((f) => `<script defer src="${f}"></script>`).join('\n')
          + '\n</head>\n<body><main id="app"></main></body>\n</html>\n';
        compilation.emitAsset('index.html', new compiler.webpack.sources.RawSource(html));
      });
    });
  }
}

module.exports = {
  entry: './src/index.js',
  output: { path: path.resolve(__dirname, 'dist'), filename: '[name].[contenthash].js', clean: true },
  plugins: [new IndexHtml()],
  performance: { hints: false },
};
