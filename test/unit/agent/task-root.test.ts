import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import {
  defaultChroot,
  describeTaskRoot,
  ENTER_NAME,
  ENTER_SCRIPT,
  enterRoot,
  parseTaskRootEnv,
  rootEnv,
  type Command,
  type TaskRoot,
} from '../../../node-agent/src/task-root.js';
import { DEFAULT_PATH, InheritedEnv } from '../../../node-agent/src/task-env.js';
import { tempDir } from './temp-dirs.js';

const BUSYBOX = ['/bin/busybox', 'chroot'];
const root: TaskRoot = {
  dir: '/run/lilcluster/root',
  path: '/usr/bin:/bin',
  chroot: BUSYBOX,
  label: 'image ml version 0123456789ab',
  health: '',
};

function entered(cmd: Command, r: TaskRoot = root): Command {
  const c = enterRoot(cmd, r);
  if ('refused' in c) throw new Error(c.refused);
  return c;
}

describe('entering the task root', () => {
  it('is chroot ROOT /bin/sh -c SCRIPT lc-task CWD FILE ARGS..., started from the work dir', () => {
    expect(entered({ file: 'python3', args: ['-c', 'print(1)'], cwd: '/tmp/w/1-1' })).toEqual({
      file: '/bin/busybox',
      args: ['chroot', '/run/lilcluster/root', '/bin/sh', '-c', ENTER_SCRIPT, ENTER_NAME, '/tmp/w/1-1', 'python3', '-c', 'print(1)'],
      cwd: '/tmp/w/1-1',
    });
    expect(entered({ file: '/bin/true', args: [], cwd: '/' }, { ...root, chroot: ['/usr/sbin/chroot'] })).toEqual({
      file: '/usr/sbin/chroot',
      args: ['/run/lilcluster/root', '/bin/sh', '-c', ENTER_SCRIPT, ENTER_NAME, '/', '/bin/true'],
      cwd: '/',
    });
  });

  it('refuses a command name that a shell would read as an option', () => {
    expect(enterRoot({ file: '-a', args: ['x', 'ls'], cwd: '/' }, root)).toEqual({
      refused: expect.stringMatching(/"-a".*starting with "-"/),
    });
  });

  it('chooses busybox when the node has it, else coreutils', () => {
    expect(defaultChroot((p) => p === '/bin/busybox')).toEqual(BUSYBOX);
    expect(defaultChroot(() => false)).toEqual(['/usr/sbin/chroot']);
  });

  // The script is run for real (without the chroot: it is the same shell code inside), by every
  // shell a root may have as /bin/sh here: whatever the arguments, the task gets them
  // unchanged, in its work dir.
  const shells = [
    ...new Set(['/bin/sh', '/bin/dash', '/bin/bash', '/bin/busybox'].filter((s) => existsSync(s)).map((s) => realpathSync(s))),
  ];
  const work = join(tempDir('lc-root-unit-'), 'a dir "with" $pace\nand -dash');
  mkdirSync(work);
  const hostile = fc.array(
    fc.oneof(
      fc.string({ unit: 'binary' }).map((s) => s.replaceAll('\0', '')),
      fc.constantFrom('', ' ', '-', '--', '-c', '-e', '-n', '$1', '"$@"', "'", '"', '\n', '$(id)', '`id`', '*', '; exit 3'),
    ),
    { maxLength: 6 },
  );
  it.each(shells)('keeps every argument and the work dir under %s', (shell) => {
    fc.assert(
      fc.property(hostile, (args) => {
        const c = entered({ file: 'printf', args: ['%s\\0', ...args], cwd: work });
        const sh = shell.endsWith('/busybox') ? ['/bin/busybox', 'sh'] : [shell];
        const afterRoot = c.args.slice(c.args.indexOf(root.dir) + 2); // the argv that follows chroot ROOT /bin/sh
        const pwd = spawnSync(sh[0]!, [...sh.slice(1), ...afterRoot.slice(0, 4), '/bin/pwd'], { encoding: 'utf8' });
        expect(pwd.stdout).toBe(`${work}\n`);
        const r = spawnSync(sh[0]!, [...sh.slice(1), ...afterRoot], { encoding: 'utf8', env: { PATH: '/usr/bin:/bin' } });
        expect(r.status).toBe(0);
        expect(r.stdout).toBe(args.map((a) => `${a}\0`).join('') || '\0');
      }),
      { numRuns: 25 },
    );
  });

  it("passes the task's exit status and signal through (exec: the task is the shell's pid)", () => {
    const c = entered({ file: '/bin/sh', args: ['-c', 'exit 7'], cwd: '/' });
    const after = c.args.slice(c.args.indexOf(root.dir) + 1);
    expect(spawnSync(after[0]!, after.slice(1)).status).toBe(7);
    const k = entered({ file: '/bin/sh', args: ['-c', 'kill -USR1 $$'], cwd: '/' });
    expect(spawnSync('/bin/sh', k.args.slice(k.args.indexOf(root.dir) + 2)).signal).toBe('SIGUSR1');
  });
});

describe('task root settings', () => {
  it('is off without LC_TASK_ROOT (empty counts as unset: /init always passes it)', () => {
    expect(parseTaskRootEnv({}, BUSYBOX)).toEqual({ kind: 'none' });
    expect(parseTaskRootEnv({ LC_TASK_ROOT: '', LC_TASK_PATH: '', LC_TASK_ROOT_ERROR: '' }, BUSYBOX)).toEqual({ kind: 'none' });
  });

  it('takes the root, its PATH and its name', () => {
    expect(
      parseTaskRootEnv(
        {
          LC_TASK_ROOT: '/run/lilcluster/root/',
          LC_TASK_PATH: '/opt/x/bin:/usr/bin',
          LC_ROOT_IMAGE: 'ml',
          LC_ROOT_VERSION: 'abc',
          LC_ROOT_HEALTH: 'python3 -c "import numpy"',
        },
        BUSYBOX,
      ),
    ).toEqual({
      kind: 'root',
      root: {
        dir: '/run/lilcluster/root',
        path: '/opt/x/bin:/usr/bin',
        chroot: BUSYBOX,
        label: 'image ml version abc',
        health: 'python3 -c "import numpy"',
      },
    });
    expect(parseTaskRootEnv({ LC_TASK_ROOT: '/r' }, BUSYBOX)).toMatchObject({ root: { path: DEFAULT_PATH, label: 'the root image' } });
  });

  it("refuses tasks with /init's reason when the root could not be mounted", () => {
    const c = parseTaskRootEnv(
      { LC_TASK_ROOT: '', LC_TASK_ROOT_ERROR: 'not enough memory: 300 MiB available, 900 MiB needed', LC_ROOT_IMAGE: 'ml' },
      BUSYBOX,
    );
    expect(c).toEqual({
      kind: 'refused',
      reason: 'image ml is not usable on this node: not enough memory: 300 MiB available, 900 MiB needed',
    });
    expect(describeTaskRoot(c)).toMatch(/^!!! image ml is not usable/);
  });

  it('refuses a relative root, or /', () => {
    for (const dir of ['root', '/', '//'])
      expect(parseTaskRootEnv({ LC_TASK_ROOT: dir }, BUSYBOX)).toEqual({
        kind: 'refused',
        reason: expect.stringMatching(/absolute path other than \//),
      });
  });

  it("gives tasks the root's PATH, not the agent's libraries nor its root settings", () => {
    const host = {
      PATH: '/usr/sbin:/usr/bin',
      LD_LIBRARY_PATH: '/usr/lib/lilcluster',
      LD_PRELOAD: 'x.so',
      LANG: 'C.UTF-8',
      LC_TASK_ROOT: '/r',
      LC_TASK_PATH: '/p',
      LC_ROOT_IMAGE: 'ml',
    };
    const env = new InheritedEnv(rootEnv(host, root));
    expect(env.vars).toEqual({ PATH: '/usr/bin:/bin', LANG: 'C.UTF-8', LC_ROOT_IMAGE: 'ml' });
  });
});
