/**
 * cgroup v2 for tasks (node-agent/src/cgroup.ts): the files it reads (memory.events,
 * memory.peak, /proc/self/cgroup, /proc/mounts) and what it writes, on a directory standing in
 * for the cgroup file system (plain files: the kernel's own behaviour is the e2e test's).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { fstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  cgroup2Mount,
  countGpus,
  cpuMax,
  defaultTaskMemMiB,
  ownCgroupPath,
  parseMemoryEvents,
  parseMemoryPeakKiB,
  TaskCgroups,
} from '../../../node-agent/src/cgroup.js';

describe('cgroup files', () => {
  it('memory.events: oom_kill and the others, unknown lines ignored', () => {
    const e = parseMemoryEvents('low 0\nhigh 3\nmax 12\noom 1\noom_kill 1\noom_group_kill 1\nsock_throttled 9\n');
    expect(e).toEqual({ low: 0, high: 3, max: 12, oom: 1, oomKill: 1, oomGroupKill: 1 });
    expect(parseMemoryEvents('')).toEqual({ low: 0, high: 0, max: 0, oom: 0, oomKill: 0, oomGroupKill: 0 });
    expect(parseMemoryEvents('oom_kill x\noom_kill -1\ngarbage\n').oomKill).toBe(0);
  });

  it('memory.peak: bytes to KiB; garbage or a missing file is null', () => {
    expect(parseMemoryPeakKiB('209715200\n')).toBe(204800);
    expect(parseMemoryPeakKiB('1\n')).toBe(1);
    expect(parseMemoryPeakKiB('max\n')).toBeNull();
    expect(parseMemoryPeakKiB(undefined)).toBeNull();
    expect(parseMemoryPeakKiB('')).toBeNull();
  });

  it('/proc/mounts: cgroup2 at /sys/fs/cgroup first, else anywhere (a hybrid host), else none', () => {
    expect(cgroup2Mount('cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n')).toBe('/sys/fs/cgroup');
    const hybrid =
      'tmpfs /sys/fs/cgroup tmpfs ro 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\ncgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n';
    expect(cgroup2Mount(hybrid)).toBe('/sys/fs/cgroup/unified');
    expect(cgroup2Mount('proc /proc proc rw 0 0\n')).toBeNull();
  });

  it('/proc/self/cgroup: the v2 line', () => {
    expect(ownCgroupPath('0::/\n')).toBe('/');
    expect(ownCgroupPath('12:memory:/x\n0::/system.slice/agent.service\n')).toBe('/system.slice/agent.service');
    expect(ownCgroupPath('12:memory:/x\n')).toBeNull();
  });

  it('cpu.max, memory and GPUs by default', () => {
    expect(cpuMax(2)).toBe('200000 100000');
    expect(defaultTaskMemMiB('MemTotal: 1048576 kB\nMemAvailable: 819200 kB\n', 128)).toBe(672);
    expect(defaultTaskMemMiB('MemTotal: 1048576 kB\n', 128)).toBe(896);
    expect(defaultTaskMemMiB('MemAvailable: 102400 kB\n', 128)).toBe(0);
    expect(countGpus(['nvidia0', 'nvidia1', 'nvidiactl', 'nvidia-uvm', 'null'])).toBe(2);
  });
});

describe('TaskCgroups on a stand-in tree', () => {
  let root: string;
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  function fakeRoot(controllers: string): string {
    root = mkdtempSync(join(tmpdir(), 'lc-cgroup-'));
    writeFileSync(join(root, 'cgroup.controllers'), controllers);
    return root;
  }
  const mounts = (r: string) => `cgroup2 ${r} cgroup2 rw 0 0\n`;

  it('says why tasks run unenforced: no cgroup2, no v2 line, no memory controller', () => {
    expect(TaskCgroups.setup({ mounts: '', selfCgroup: '0::/', taskMemMiB: 1, reserveMiB: 1, name: 'x' })).toMatchObject({
      enforced: false,
      reason: expect.stringMatching(/no cgroup v2/),
    });
    const r = fakeRoot('cpu io');
    expect(TaskCgroups.setup({ mounts: mounts(r), selfCgroup: '1:memory:/\n', taskMemMiB: 1, reserveMiB: 1, name: 'x' })).toMatchObject({
      enforced: false,
      reason: expect.stringMatching(/cgroup v1/),
    });
    expect(TaskCgroups.setup({ mounts: mounts(r), selfCgroup: '0::/', taskMemMiB: 1, reserveMiB: 1, name: 'x' })).toMatchObject({
      enforced: false,
      reason: expect.stringMatching(/memory controller is not available/),
    });
  });

  it('makes the agent and tasks cgroups, moves the agent, and writes each task’s limits', async () => {
    const r = fakeRoot('cpuset cpu io memory pids');
    const setup = TaskCgroups.setup({ mounts: mounts(r), selfCgroup: '0::/', taskMemMiB: 700, reserveMiB: 128, name: 'n1', pid: 4242 });
    if (!setup.enforced) throw new Error(setup.reason);
    const base = join(r, 'lilcluster-n1');
    const read = (p: string) => readFileSync(join(base, p), 'utf8');
    expect(read('agent/cgroup.procs')).toBe('4242');
    expect(read('agent/memory.min')).toBe(String(128 * 1048576));
    expect(read('tasks/memory.max')).toBe(String(700 * 1048576));
    expect(read('cgroup.subtree_control')).toBe('+memory +cpu');
    expect(readFileSync(join(r, 'cgroup.subtree_control'), 'utf8')).toBe('+memory +cpu');

    const cg = setup.cgroups.create('7-1', { cores: 2, memMiB: 256, gpus: 0 });
    expect(read('tasks/7-1/memory.max')).toBe(String(256 * 1048576));
    expect(read('tasks/7-1/memory.oom.group')).toBe('1');
    expect(read('tasks/7-1/cpu.max')).toBe('200000 100000');
    // The task's shell enters the cgroup, then execs the task with its arguments untouched.
    expect(cg.wrap('/bin/echo', ['a b', '$x'])).toEqual({
      file: '/bin/sh',
      args: ['-c', 'echo $$ > "$0" && exec "$@"', join(base, 'tasks/7-1/cgroup.procs'), '/bin/echo', 'a b', '$x'],
    });
    // For a launcher that starts the task in it: the directory, open once, closed by finish.
    const fd = cg.openDir();
    expect(fstatSync(fd).isDirectory()).toBe(true);
    expect(fstatSync(fd).ino).toBe(statSync(join(base, 'tasks/7-1')).ino);
    expect(cg.openDir()).toBe(fd);
    writeFileSync(join(base, 'tasks/7-1/memory.events'), 'low 0\nhigh 0\nmax 40\noom 1\noom_kill 1\n');
    await expect(cg.finish()).resolves.toEqual({ oom: true, memPeakKiB: null });
    const held = () => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`) === join(base, 'tasks/7-1');
      } catch {
        return false;
      }
    };
    expect(held()).toBe(false);

    const plain = setup.cgroups.create('8-1', undefined);
    expect(() => readFileSync(join(base, 'tasks/8-1/memory.max'))).toThrow(/ENOENT/);
    expect(() => readFileSync(join(base, 'tasks/8-1/cpu.max'))).toThrow(/ENOENT/);
    writeFileSync(join(base, 'tasks/8-1/memory.events'), 'oom 0\noom_kill 0\n');
    await expect(plain.finish()).resolves.toEqual({ oom: false, memPeakKiB: null });
  });

  it('reads memory.peak where the kernel has it', async () => {
    const r = fakeRoot('memory');
    mkdirSync(join(r, 'lilcluster-n2', 'tasks'), { recursive: true });
    writeFileSync(join(r, 'lilcluster-n2', 'tasks', 'memory.peak'), '0\n');
    const setup = TaskCgroups.setup({ mounts: mounts(r), selfCgroup: '0::/', taskMemMiB: 100, reserveMiB: 10, name: 'n2', pid: 1 });
    if (!setup.enforced) throw new Error(setup.reason);
    const cg = setup.cgroups.create('1-1', { cores: 1, memMiB: 50, gpus: 0 });
    writeFileSync(join(cg.dir, 'memory.peak'), `${300 * 1048576}\n`);
    await expect(cg.finish()).resolves.toEqual({ oom: false, memPeakKiB: 300 * 1024 });
  });
});
