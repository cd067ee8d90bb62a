/**
 * Finds one of the dispatcher's N-API addons (dispatcher/native/<name>.c, built by `make build`
 * into dist/native/<name>.node): beside the bundle (dist/bin → dist/native, and the installed
 * /opt/lilcluster/{bin,native}) or, from the sources, in the tree's dist/native. Loading is the
 * caller's (each has its own fallback when the addon is missing).
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

export type AddonLoad<T> = { addon: T; path: string } | { addon: undefined; reason: string };

export function loadAddon<T>(name: string, check: (m: Record<string, unknown>) => boolean, paths?: string[]): AddonLoad<T> {
  if (process.platform !== 'linux') return { addon: undefined, reason: `not on Linux (${process.platform})` };
  const candidates = paths ?? [
    fileURLToPath(new URL(`../native/${name}.node`, import.meta.url)),
    fileURLToPath(new URL(`../../../dist/native/${name}.node`, import.meta.url)),
  ];
  const path = candidates.find((p) => existsSync(p));
  if (!path) return { addon: undefined, reason: `dist/native/${name}.node not built (make build; looked in ${candidates.join(', ')})` };
  try {
    const m = createRequire(import.meta.url)(path) as Record<string, unknown>;
    if (!check(m)) return { addon: undefined, reason: `${path} is not the ${name} addon` };
    return { addon: m as T, path };
  } catch (err) {
    return { addon: undefined, reason: `cannot load ${path}: ${(err as Error).message}` };
  }
}
