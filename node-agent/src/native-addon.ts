/**
 * Finds and loads one of the project's N-API addons (`make build` compiles dispatcher/native/*.c
 * and node-agent/native/*.c into dist/native/<name>.node); the one loader for the agent's
 * spawner and the dispatcher's sendfile and router-advert. Each caller keeps its own fallback
 * when the addon is missing, and says why (`reason`).
 *
 * It lives in node-agent/ because the agent may import nothing of dispatcher/ but its
 * protocol/, while the dispatcher may import this dependency-free module; and a bundle
 * resolves the paths below from itself, wherever the module was in the tree.
 *
 * Looked for, first found wins (`paths` replaces the list):
 * - `LC_<NAME>_ADDON` (e.g. LC_SPAWN_ADDON, LC_SENDFILE_ADDON);
 * - beside the bundle, `./native/` (the RAM image: /usr/lib/lilcluster/{node-agent.mjs,native/});
 * - `../native/` from the bundle (dist/bin → dist/native; /opt/lilcluster/{bin,native} after
 *   `make install`);
 * - from the sources (tests), the tree's dist/native.
 * `LC_<NAME>=0` turns the addon off.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

export type AddonLoad<T> = { addon: T; path: string } | { addon: undefined; reason: string };

export interface AddonLoadOptions {
  env?: NodeJS.ProcessEnv;
  /** Replaces the places looked in. */
  paths?: string[];
}

/** `name` is the file's base name (spawn, sendfile, router-advert); `check` tells it from another module. */
export function loadAddon<T>(name: string, check: (m: Record<string, unknown>) => boolean, opts: AddonLoadOptions = {}): AddonLoad<T> {
  const env = opts.env ?? process.env;
  const VAR = `LC_${name.toUpperCase().replaceAll('-', '_')}`;
  if (env[VAR] === '0') return { addon: undefined, reason: `${VAR}=0` };
  if (process.platform !== 'linux') return { addon: undefined, reason: `not on Linux (${process.platform})` };
  const candidates = (
    opts.paths ?? [
      env[`${VAR}_ADDON`],
      fileURLToPath(new URL(`./native/${name}.node`, import.meta.url)),
      fileURLToPath(new URL(`../native/${name}.node`, import.meta.url)),
      fileURLToPath(new URL(`../../dist/native/${name}.node`, import.meta.url)),
    ]
  ).filter((p): p is string => !!p);
  const path = candidates.find((p) => existsSync(p));
  if (!path) return { addon: undefined, reason: `${name}.node not built (make build; looked in ${candidates.join(', ')})` };
  try {
    const m = createRequire(import.meta.url)(path) as Record<string, unknown>;
    if (!check(m)) return { addon: undefined, reason: `${path} is not the ${name} addon` };
    return { addon: m as T, path };
  } catch (err) {
    return { addon: undefined, reason: `cannot load ${path}: ${(err as Error).message}` };
  }
}
