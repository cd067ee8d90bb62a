import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AGENT_ONLY_ENV, DEFAULT_PATH, InheritedEnv, PER_TASK_ENV, type EnvBlock } from '../../../node-agent/src/task-env.js';
import { loadSpawnAddon } from '../../../node-agent/src/spawn-addon.js';
import { tempDir } from './temp-dirs.js';

/** What spawn.c makes of a block: the entries in order; getenv() takes the first of a name. */
function parse(b: EnvBlock): Record<string, string> {
  const entries = b.text === '' ? [] : b.text.split('\0');
  expect(entries.length).toBe(b.count);
  const out: Record<string, string> = {};
  for (const e of entries) {
    const i = e.indexOf('=');
    const k = e.slice(0, i);
    expect(out, `${k} appears twice`).not.toHaveProperty(k);
    out[k] = e.slice(i + 1);
  }
  return out;
}

const host = {
  PATH: '/usr/bin:/bin',
  HOME: '/root',
  LANG: 'C.UTF-8',
  LC_TOKEN: 'secret',
  LC_ENROLL_TOKEN: 'enroll',
  NODE_OPTIONS: '--inspect',
  LC_TASK_ID: 'stale',
};
const perTask = { HOME: '/w/1-1', LC_TASK_ID: '1', LC_JOB_ID: '7', LC_ATTEMPT: '1', LC_WORK_DIR: '/w/1-1', LC_OUT_DIR: '/w/1-1/out' };

describe('task environment', () => {
  it("is the host's minus the agent's settings, with the task's variables on top", () => {
    const env = new InheritedEnv(host);
    const want = { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8', ...perTask };
    expect(env.object(perTask)).toEqual(want);
    expect(parse(env.block(perTask))).toEqual(want);
    for (const k of AGENT_ONLY_ENV) expect(env.vars).not.toHaveProperty(k);
  });

  it('lets a task override an inherited variable, in both forms', () => {
    const env = new InheritedEnv(host);
    const set = { ...perTask, PATH: '/opt/bin', LANG: 'fr_FR.UTF-8', EXTRA: 'x' };
    expect(parse(env.block(set))).toEqual(env.object(set));
    expect(parse(env.block(set)).PATH).toBe('/opt/bin');
    // The shared block is not changed by one task's override.
    expect(parse(env.block(perTask)).PATH).toBe('/usr/bin:/bin');
  });

  it('gives a PATH when the host has none', () => {
    expect(new InheritedEnv({}).vars.PATH).toBe(DEFAULT_PATH);
    expect(parse(new InheritedEnv({}).block({}))).toEqual({ PATH: DEFAULT_PATH });
  });

  it('agrees with the object form for any host and task variables', () => {
    const name = fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,8}$/);
    const vars = fc.dictionary(
      name,
      fc.string({ maxLength: 12 }).filter((v) => !v.includes('\0')),
      { maxKeys: 12 },
    );
    fc.assert(
      fc.property(vars, vars, fc.boolean(), (hostVars, taskVars, withPerTask) => {
        const env = new InheritedEnv(hostVars);
        const set = withPerTask ? { ...perTask, ...taskVars } : taskVars;
        expect(parse(env.block(set))).toEqual(env.object(set));
      }),
    );
  });

  it('leaves the per-task names out of the shared block', () => {
    const env = new InheritedEnv({ ...host, LC_OUT_DIR: 'stale' });
    const shared = parse(env.block({}));
    for (const k of PER_TASK_ENV) expect(shared).not.toHaveProperty(k);
  });
});

describe('loading the spawn addon', () => {
  it('says why when it is turned off, missing or not the addon', () => {
    expect(loadSpawnAddon({ env: { LC_SPAWN: '0' } })).toMatchObject({ addon: undefined, reason: 'LC_SPAWN=0' });
    const missing = loadSpawnAddon({ env: {}, paths: ['/nonexistent/spawn.node'] });
    expect(missing.addon === undefined && missing.reason).toMatch(/not built/);
    const bogus = join(tempDir('lc-spawn-load-'), 'bogus.node');
    writeFileSync(bogus, 'not an ELF object');
    expect(loadSpawnAddon({ env: {}, paths: [bogus] })).toMatchObject({ addon: undefined, reason: expect.stringMatching(/cannot load/) });
  });

  it('finds the built addon from the sources (make build), or LC_SPAWN_ADDON', () => {
    const loaded = loadSpawnAddon({ env: {} });
    expect(loaded.addon === undefined ? loaded.reason : 'loaded').toBe('loaded');
    const path = loaded.addon ? loaded.path : '';
    expect(loadSpawnAddon({ env: { LC_SPAWN_ADDON: path } })).toMatchObject({ path });
  });
});
