/** Set by esbuild's `define` in bundles; falls back to package.json in tests. */
declare const __LILCLUSTER_VERSION__: string | undefined;
export const VERSION: string = typeof __LILCLUSTER_VERSION__ === 'string' ? __LILCLUSTER_VERSION__ : '0.1.0-dev';
