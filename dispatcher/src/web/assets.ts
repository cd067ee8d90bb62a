/**
 * The status page's static files (static/). In the dispatcher bundle they are strings
 * (esbuild's `with { type: 'text' }`), so dist/bin/dispatcher.mjs is self-contained; when
 * running from the sources (tests), they are read from disk beside this file.
 */
import { readFileSync } from 'node:fs';

export interface WebAssets {
  'index.html': string;
  'app.js': string;
  'style.css': string;
}

let cached: Promise<WebAssets> | undefined;

export function webAssets(): Promise<WebAssets> {
  cached ??= load();
  return cached;
}

async function load(): Promise<WebAssets> {
  try {
    const read = (name: string) => readFileSync(new URL(`./static/${name}`, import.meta.url), 'utf8');
    return { 'index.html': read('index.html'), 'app.js': read('app.js'), 'style.css': read('style.css') };
  } catch {
    // Bundled: the files are not beside the bundle; esbuild inlined them below.
  }
  const [html, js, css] = await Promise.all([
    import('./static/index.html', { with: { type: 'text' } }),
    import('./static/app.js', { with: { type: 'text' } }),
    import('./static/style.css', { with: { type: 'text' } }),
  ]);
  return { 'index.html': html.default, 'app.js': js.default, 'style.css': css.default };
}
