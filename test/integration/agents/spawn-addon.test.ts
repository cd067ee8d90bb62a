/**
 * The spawn addon itself (node-agent/native/spawn.c, dist/native/spawn.node from `make
 * build`), below the launcher: sessions, reaping, exit statuses, errors, descriptors, and
 * living beside Node's own child_process in one process.
 */
import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { closeSync, fstatSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { cgroup2Mount, ownCgroupPath } from '../../../node-agent/src/cgroup.js';
import { loadSpawnAddon, type SpawnAddon } from '../../../node-agent/src/spawn-addon.js';
import { tempDir } from '../../unit/agent/temp-dirs.js';

const loaded = loadSpawnAddon({ env: {} });
if (!loaded.addon) throw new Error(`the spawn addon is needed for this test (make build): ${loaded.reason}`);
const addon: SpawnAddon = loaded.addon;

const ENV = ['PATH=/usr/local/bin:/usr/bin:/bin', 'LANG=C'];

interface Ran {
  pid: number;
  exitCode: number;
  signal: number;
  maxRssKiB: number;
  stdout: string;
  stderr: string;
  /** /proc/<pid>/stat fields read right after the start: pid, pgrp, session. */
  ids: { pgrp: number; session: number } | undefined;
}

function readAll(fd: number): string {
  const size = fstatSync(fd).size;
  const b = Buffer.alloc(size);
  let n = 0;
  while (n < size) n += readSync(fd, b, n, size - n, n);
  closeSync(fd);
  return b.toString();
}

function idsOf(pid: number): Ran['ids'] {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return { pgrp: Number(f[2]), session: Number(f[3]) };
  } catch {
    return undefined;
  }
}

function spawnOnce(
  argv: string[],
  opts: { stdin?: Buffer; cwd?: string; cgroupFd?: number; onStarted?: (pid: number, out: number) => void } = {},
): Promise<Ran> {
  return new Promise((resolve, reject) => {
    let pid = 0;
    let out = -1;
    let err = -1;
    let ids: Ran['ids'];
    addon.spawn(
      argv[0]!,
      argv.join('\0'),
      argv.length,
      ENV.join('\0'),
      ENV.length,
      opts.cwd ?? '/',
      opts.stdin ?? null,
      (error, p, o, e) => {
        if (error !== null) return reject(Object.assign(new Error(error), { code: error }));
        [pid, out, err] = [p, o, e];
        ids = idsOf(p);
        opts.onStarted?.(p, o);
      },
      (exitCode, signal, maxRssKiB) => resolve({ pid, exitCode, signal, maxRssKiB, stdout: readAll(out), stderr: readAll(err), ids }),
      opts.cgroupFd,
    );
  });
}

const openFds = () => readdirSync('/proc/self/fd').length;
const noop = () => {};
const gone = (pid: number) => {
  try {
    readFileSync(`/proc/${pid}/stat`);
    return false;
  } catch {
    return true;
  }
};

describe('spawn addon', () => {
  it('runs a program in its own session and group, with stdin, and reaps it', async () => {
    const r = await spawnOnce(['/bin/sh', '-c', 'cat; echo to-stderr >&2; sleep 0.2; exit 7'], { stdin: Buffer.from('from stdin\n') });
    expect(r).toMatchObject({ exitCode: 7, signal: 0, stdout: 'from stdin\n', stderr: 'to-stderr\n' });
    expect(r.ids).toEqual({ pgrp: r.pid, session: r.pid });
    expect(r.maxRssKiB).toBeGreaterThan(0);
    expect(gone(r.pid)).toBe(true); // reaped: no zombie left
  });

  it('looks the program up in the given PATH and runs it in cwd', async () => {
    const r = await spawnOnce(['pwd'], { cwd: '/proc' });
    expect(r).toMatchObject({ exitCode: 0, stdout: '/proc\n' });
  });

  it('reports death by a signal', async () => {
    const r = await spawnOnce(['/bin/sh', '-c', 'kill -TERM $$']);
    expect(r).toMatchObject({ exitCode: -1, signal: 15 });
  });

  it('kills what is left in the group when the leader exits', async () => {
    const r = await spawnOnce(['/bin/sh', '-c', 'sleep 30 & echo $!']);
    const bg = Number(r.stdout.trim());
    expect(bg).toBeGreaterThan(0);
    for (let i = 0; i < 50 && !gone(bg) && !/\) Z /.test(readFileSync(`/proc/${bg}/stat`, 'latin1')); i++)
      await new Promise((res) => setTimeout(res, 20));
    expect(gone(bg) || /\) Z /.test(readFileSync(`/proc/${bg}/stat`, 'latin1'))).toBe(true);
  });

  it('reports programs that cannot start through onStart, bad arguments by throwing', async () => {
    await expect(spawnOnce(['/nonexistent/x'])).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(spawnOnce(['lc-not-on-path'])).rejects.toMatchObject({ code: 'ENOENT' });
    const plain = join(tempDir('lc-spawn-addon-'), 'plain');
    writeFileSync(plain, '#!/bin/sh\n', { mode: 0o644 });
    await expect(spawnOnce([plain])).rejects.toMatchObject({ code: 'EACCES' });
    await expect(spawnOnce(['/proc'])).rejects.toMatchObject({ code: 'EACCES' });
    await expect(spawnOnce(['/bin/true'], { cwd: '/nonexistent' })).rejects.toMatchObject({ code: 'ENOENT' });
    expect(() => addon.spawn('/bin/echo', 'echo\0a\0b', 2, '', 0, '/', null, noop, noop)).toThrow(
      expect.objectContaining({ code: 'EINVAL' }),
    );
    expect(() => addon.spawn('/bin/echo', 'echo', 1, 'A=1\0B=2', 1, '/', null, noop, noop)).toThrow(
      expect.objectContaining({ code: 'EINVAL' }),
    );
    expect(() => addon.spawn('/bin/echo', 'echo', 1, '', 0, '/', null, 'not a function' as unknown as () => void, noop)).toThrow(TypeError);
  });

  it('frees output already read without moving the writer', async () => {
    let freedBlocks = -1;
    const r = await spawnOnce(['/bin/sh', '-c', 'head -c 4194304 /dev/zero; sleep 0.5; echo end'], {
      onStarted: (_pid, out) => {
        setTimeout(() => {
          expect(fstatSync(out).size).toBe(4194304);
          addon.discard(out, 0, 4194304);
          freedBlocks = fstatSync(out).blocks;
        }, 300);
      },
    });
    expect(freedBlocks).toBe(0);
    expect(r.stdout.length).toBe(4194304 + 4);
    expect(r.stdout.endsWith('\0end\n')).toBe(true);
  });

  describe('into a cgroup (clone3, CLONE_INTO_CGROUP)', () => {
    it('refuses a descriptor that is no cgroup v2 directory as a start failure, leaving nothing behind', async () => {
      expect(addon.intoCgroup).toBe(true);
      const fds = openFds();
      const plain = openSync(tempDir('lc-spawn-cg-'), 'r');
      try {
        // The kernel's answer for a directory of another file system (or of cgroup v1).
        await expect(spawnOnce(['/bin/true'], { cgroupFd: plain })).rejects.toMatchObject({ code: 'EBADF (clone3)' });
      } finally {
        closeSync(plain);
      }
      expect(() => addon.spawn('/bin/true', 'true', 1, '', 0, '/', null, noop, noop, 'x' as unknown as number)).toThrow(TypeError);
      expect(openFds()).toBeLessThanOrEqual(fds);
    });

    // This host's cgroup v2 hierarchy has no controllers (cgroup v1 hybrid), but moving a
    // process between its cgroups is real: the task must start in the one it is given, and
    // behave as a posix_spawn task does (session, stdin, dispositions, descriptors, errors).
    const mount = cgroup2Mount(readFileSync('/proc/mounts', 'utf8'));
    const own = ownCgroupPath(readFileSync('/proc/self/cgroup', 'utf8'));
    const canMake = mount !== null && own !== null && process.getuid?.() === 0;
    it.runIf(canMake)('starts the process in the given cgroup, as posix_spawn would start it', async () => {
      const name = `lc-spawn-test-${process.pid}`;
      const dir = join(mount!, own!, name);
      mkdirSync(dir);
      const fd = openSync(dir, 'r');
      try {
        const fds = openFds();
        const r = await spawnOnce(
          [
            '/bin/sh',
            '-c',
            'grep ^0:: /proc/self/cgroup; cat; grep -E "^(SigBlk|SigIgn)" /proc/self/status; ls /proc/self/fd; pwd; exit 5',
          ],
          { cgroupFd: fd, stdin: Buffer.from('from stdin\n'), cwd: '/proc' },
        );
        const at = own === '/' ? `/${name}` : `${own}/${name}`;
        expect(r.stdout).toBe(`0::${at}\nfrom stdin\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n0\n1\n2\n3\n/proc\n`);
        expect(r).toMatchObject({ exitCode: 5, signal: 0 });
        expect(r.ids).toEqual({ pgrp: r.pid, session: r.pid });
        expect(gone(r.pid)).toBe(true);
        await expect(spawnOnce(['lc-not-on-path'], { cgroupFd: fd })).rejects.toMatchObject({ code: 'ENOENT' });
        await expect(spawnOnce(['/proc'], { cgroupFd: fd })).rejects.toMatchObject({ code: 'EACCES' });
        await expect(spawnOnce(['/bin/true'], { cgroupFd: fd, cwd: '/nonexistent' })).rejects.toMatchObject({
          code: 'ENOENT (file actions)',
        });
        expect(openFds()).toBeLessThanOrEqual(fds);
      } finally {
        closeSync(fd);
        rmdirSync(dir);
      }
    });
  });

  it("lives beside child_process: neither reaps the other's children", async () => {
    const fds = openFds();
    const node = promisify(execFile)('/bin/sh', ['-c', 'sleep 0.3; echo node']);
    const ours = Promise.all(Array.from({ length: 40 }, (_, i) => spawnOnce(['/bin/sh', '-c', `exit ${i % 5}`])));
    const [n, rs] = await Promise.all([node, ours]);
    expect(n.stdout).toBe('node\n');
    expect(rs.map((r) => r.exitCode)).toEqual(Array.from({ length: 40 }, (_, i) => i % 5));
    expect(openFds()).toBeLessThanOrEqual(fds); // pidfds and output memfds all closed
  });
});
