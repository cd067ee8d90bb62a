/**
 * Tasks inside a task root (node-agent/src/task-root.ts), with real processes and real mounts
 * (needs root): a small root made here — busybox and a marker file — with /tmp and /proc
 * bind-mounted into it as /init does on the node, and the real ProcessRunner over both launchers.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { ProcessRunner } from '../../../node-agent/src/runner.js';
import { groupMembers, killGroup, killOrphanTasks } from '../../../node-agent/src/proc.js';
import { loadTaskRoot, enterRoot, type TaskRootConfig, type TaskRoot, type Command } from '../../../node-agent/src/task-root.js';
import type { TaskAssignment, TaskResult } from '../../../dispatcher/src/protocol/messages.js';
import { LAUNCHERS, task } from './launchers.js';

const CHROOT = ['/bin/busybox', 'chroot'];
const APPLETS = ['sh', 'cat', 'pwd', 'sleep', 'echo', 'env', 'test', 'mkdir', 'kill', 'true'];
const MARKER = 'inside the task root\n';
// On the host, not in the root: the test's own source file.
const HOST_ONLY = import.meta.filename;

process.env.LD_LIBRARY_PATH = '/host/libs'; // the agent's libraries: never passed into the root
process.env.LC_TOKEN = 'secret-agent-token';

const base = mkdtempSync('/tmp/lc-task-root-'); // under /tmp: the roots see it through their /tmp bind
const rootDir = join(base, 'root');
const noShell = join(base, 'no-shell');
const unbound = join(base, 'unbound'); // a shell, but /tmp not bound inside
const tasksDir = join(base, 'tasks');
const mounted: string[] = [];

function makeRoot(dir: string, shell: boolean): void {
  mkdirSync(join(dir, 'bin'), { recursive: true });
  mkdirSync(join(dir, 'etc'));
  mkdirSync(join(dir, 'tmp'));
  mkdirSync(join(dir, 'proc'));
  writeFileSync(join(dir, 'etc/marker'), MARKER);
  if (!shell) return;
  copyFileSync('/bin/busybox', join(dir, 'bin/busybox')); // static: needs no library in the root
  for (const a of APPLETS) symlinkSync('busybox', join(dir, 'bin', a));
}

function bind(from: string, to: string): void {
  execFileSync('mount', ['--bind', from, to]);
  mounted.push(to);
}

beforeAll(() => {
  mkdirSync(tasksDir);
  makeRoot(rootDir, true);
  makeRoot(noShell, false);
  makeRoot(unbound, true);
  for (const r of [rootDir, noShell]) {
    bind('/tmp', join(r, 'tmp'));
    bind('/proc', join(r, 'proc'));
  }
});

afterAll(() => {
  for (const m of mounted.reverse()) execFileSync('umount', ['-l', m]);
  // Never a recursive rm through a bind mount (it would reach the host's /tmp).
  const left = readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .filter((l) => l.split(' ')[1]?.startsWith(base));
  if (left.length) throw new Error(`mounts left under ${base}: ${left.join('; ')}`);
  rmSync(base, { recursive: true, force: true });
});

function rootConfig(dir: string): TaskRootConfig {
  return loadTaskRoot({ LC_TASK_ROOT: dir, LC_TASK_PATH: '/bin', LC_ROOT_IMAGE: 'test', LC_ROOT_VERSION: '0123' }, tasksDir, CHROOT);
}

async function outputs(r: TaskResult): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  const ex = tar.extract();
  const reading = (async () => {
    for await (const e of ex) {
      const parts: Buffer[] = [];
      for await (const c of e) parts.push(c as Buffer);
      if (e.header.type === 'file') files[e.header.name] = Buffer.concat(parts).toString();
    }
  })();
  ex.end(gunzipSync(Buffer.from(r.outputsTarGzB64!, 'base64')));
  await reading;
  return files;
}

function alive(pid: number): boolean {
  try {
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'latin1'));
  } catch {
    return false;
  }
}

describe.each(LAUNCHERS)('tasks in a task root (%s)', (_kind, makeLauncher) => {
  const launcher = makeLauncher();
  const runner = (taskRoot: TaskRootConfig = rootConfig(rootDir)) =>
    new ProcessRunner({
      tasksDir,
      maxOutputBytes: 1 << 20,
      maxOutputsBytes: 1 << 20,
      maxInputBytes: 1 << 20,
      killGraceMs: 300,
      httpBase: null,
      userAgent: 'test',
      launcher,
      taskRoot,
    });
  const run = (t: TaskAssignment, r = runner()) => r.start(t, () => {}).result;

  it('runs the task inside the root, in its work dir, with the root PATH; its out/ files come back', async () => {
    const t = task(
      `cat /etc/marker; test -e '${HOST_ONLY}' && echo host-visible; pwd; echo "$PATH|$LD_LIBRARY_PATH|$LC_TOKEN|$LC_ROOT_IMAGE"; echo result > out/r.txt; exit 3`,
    );
    const r = await run(t);
    expect(r).toMatchObject({ exitCode: 3, signal: null, timedOut: false, error: null, stderr: '' });
    expect(r.stdout).toBe(`${MARKER}${join(tasksDir, `${t.taskId}-1`)}\n/bin|||\n`);
    expect(await outputs(r)).toEqual({ 'r.txt': 'result\n' });
  });

  it('finds an argv command on the root PATH and keeps hostile arguments whole', async () => {
    const args = ['-n', 'two  spaces', "it's", '"q"', 'new\nline', '--', '$HOME', '-e'];
    const r = await run(task(['echo', ...args]));
    expect(r).toMatchObject({ exitCode: 0, error: null });
    // busybox echo takes the leading -n as its option (as on a host), the rest as words.
    expect(r.stdout).toBe(args.slice(1).join(' '));
  });

  it('reports the exit of a command the root does not have', async () => {
    const r = await run(task(['python3', '-c', 'print(1)']));
    expect(r.exitCode).toBe(127);
    expect(r.stderr).toMatch(/python3/);
  });

  it("reports the task's own signal", async () => {
    expect(await run(task('kill -9 $$'))).toMatchObject({ exitCode: null, signal: 'SIGKILL', timedOut: false });
  });

  it('kills the whole process group at the timeout, background children included', async () => {
    const t0 = Date.now();
    const r = await run(task('sleep 30 & echo $$ $!; sleep 30', { timeoutMs: 300 }));
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(r).toMatchObject({ timedOut: true, exitCode: null, signal: 'SIGTERM' });
    const [pgid, bg] = r.stdout.trim().split(' ').map(Number);
    expect(groupMembers(pgid!)).toEqual([]);
    expect(alive(bg!)).toBe(false);
  });

  it('runs operator exec commands inside the root', async () => {
    let out = '';
    const o = await runner().exec('cat /etc/marker; pwd', 5000, (_s, c) => {
      out += c;
    });
    expect(o).toMatchObject({ exitCode: 0, signal: null, timedOut: false });
    expect(o.error).toBeUndefined();
    expect(out).toBe(`${MARKER}/\n`);
  });

  it('refuses tasks and exec commands in a root without /bin/sh, saying why', async () => {
    const c = rootConfig(noShell);
    expect(c).toEqual({
      kind: 'refused',
      reason: expect.stringMatching(
        /task root .*no-shell \(image test version 0123\): its \/bin\/sh does not run \(.*\/bin\/sh.*\); tasks are refused/,
      ),
    });
    const reason = (c as { reason: string }).reason;
    const r = await run(task('echo should not run'), runner(c));
    expect(r).toMatchObject({ exitCode: null, signal: null, error: reason, stdout: '' });
    expect(await runner(c).exec('true', 1000, () => {})).toMatchObject({ exitCode: null, error: reason });
  });
});

describe('task root checks', () => {
  it('refuses a root in which the work dir is not at the same path', () => {
    expect(rootConfig(unbound)).toEqual({
      kind: 'refused',
      reason: expect.stringMatching(/the work dir .* is not at the same path inside it/),
    });
  });

  it("runs the image's health check once inside the root: a passing one lets tasks run, a failing one refuses them, saying why", () => {
    const env = { LC_TASK_ROOT: rootDir, LC_TASK_PATH: '/bin', LC_ROOT_IMAGE: 'test' };
    // Passes only inside the root, where /etc/marker exists.
    expect(loadTaskRoot({ ...env, LC_ROOT_HEALTH: 'grep -q "inside the task root" /etc/marker' }, tasksDir, CHROOT)).toMatchObject({
      kind: 'root',
    });
    expect(loadTaskRoot({ ...env, LC_ROOT_HEALTH: 'echo numpy is missing >&2; exit 3' }, tasksDir, CHROOT)).toEqual({
      kind: 'refused',
      reason: expect.stringMatching(/health check `echo numpy is missing >&2; exit 3` exited with status 3: numpy is missing/),
    });
    expect(loadTaskRoot({ ...env, LC_ROOT_HEALTH: `test -e '${HOST_ONLY}'` }, tasksDir, CHROOT)).toMatchObject({ kind: 'refused' });
  });

  it('refuses a root that is not a directory, and a missing chroot program', () => {
    expect(rootConfig(join(base, 'nothing'))).toMatchObject({ reason: expect.stringMatching(/not a directory/) });
    expect(loadTaskRoot({ LC_TASK_ROOT: rootDir }, tasksDir, ['/nonexistent/chroot'])).toMatchObject({
      reason: expect.stringMatching(/cannot run \/nonexistent\/chroot: ENOENT/),
    });
  });

  it("finds a task left running inside the root by a previous agent (its cwd reads through the root's mount)", async () => {
    const root = (rootConfig(rootDir) as { root: TaskRoot }).root;
    const work = join(tasksDir, 'orphan-1');
    mkdirSync(work);
    const c = enterRoot({ file: 'sleep', args: ['30'], cwd: work }, root) as Command;
    const child = spawn(c.file, c.args, { cwd: c.cwd, detached: true, stdio: 'ignore', env: { PATH: '/bin' } });
    const pid = child.pid!;
    try {
      const inside = join(rootDir, work);
      const deadline = Date.now() + 5000;
      while (readlinkSync(`/proc/${pid}/cwd`) !== inside && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(readlinkSync(`/proc/${pid}/cwd`)).toBe(inside);
      expect(killOrphanTasks(tasksDir)).toEqual([]);
      expect(killOrphanTasks(tasksDir, rootDir)).toEqual([pid]);
      await new Promise((r) => child.once('exit', r));
      expect(groupMembers(pid)).toEqual([]);
    } finally {
      killGroup(pid, 'SIGKILL');
    }
  });
});

describe('the agent process', () => {
  const AGENT_BIN = new URL('../../../dist/bin/node-agent.mjs', import.meta.url).pathname;

  /** Starts dist/bin/node-agent.mjs (make build) with a root and returns its line about it. */
  async function rootLine(env: Record<string, string>): Promise<string> {
    const workDir = mkdtempSync(join(tasksDir, 'agent-'));
    const child = spawn(
      process.execPath,
      [AGENT_BIN, '--dispatcher', 'http://127.0.0.1:9', '--enroll-token', 'x', '--insecure', '--work-dir', workDir],
      { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString();
    });
    child.stderr.on('data', (b: Buffer) => {
      out += b.toString();
    });
    try {
      const deadline = Date.now() + 15_000;
      while (!/tasks (run|are refused)|task root|not usable/.test(out) && child.exitCode === null && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 20));
      return out.split('\n').find((l) => /tasks (run|are refused)|task root|not usable/.test(l)) ?? out;
    } finally {
      child.kill('SIGKILL');
    }
  }

  it('says where tasks run, and why they are refused', async () => {
    const image = { LC_TASK_PATH: '/bin', LC_ROOT_IMAGE: 'test', LC_ROOT_VERSION: '0123' };
    expect(await rootLine({ ...image, LC_TASK_ROOT: rootDir })).toBe(
      `node-agent: tasks run inside image test version 0123 at ${rootDir} (PATH=/bin)`,
    );
    expect(await rootLine({ ...image, LC_TASK_ROOT: noShell })).toMatch(
      /^node-agent: !!! task root .*no-shell .*its \/bin\/sh does not run/,
    );
    expect(await rootLine({ ...image, LC_TASK_ROOT: '', LC_TASK_ROOT_ERROR: 'not enough memory: …' })).toBe(
      'node-agent: !!! image test version 0123 is not usable on this node: not enough memory: …',
    );
    expect(await rootLine({})).toBe("node-agent: tasks run in the agent's own file system (no task root)");
  });
});

/**
 * /init's own code for the root (image/rootfs/init, from `ROOT_ENV=` to its call), run by busybox
 * in a sandbox: a chroot holding busybox, the root.cpio files (/root.img, root.env) and the
 * kernel's views, in a private mount namespace (every mount goes with it).
 */
describe("/init's root setup", () => {
  const initText = readFileSync(new URL('../../../image/rootfs/init', import.meta.url), 'utf8');
  const start = initText.indexOf('ROOT_ENV=/etc/lilcluster/root.env');
  const end = initText.indexOf('[ -f /root.img ] && setup_root');
  const rootCode = initText.slice(start, end);

  /** A tree for root.img: busybox as /bin/sh, a marker, and what a hostile or sloppy image holds. */
  function imageTree(dir: string): void {
    makeRoot(dir, true);
    rmSync(join(dir, 'tmp'), { recursive: true });
    symlinkSync('/', join(dir, 'tmp')); // mount would follow it out of the root
    rmSync(join(dir, 'proc'), { recursive: true }); // missing mount point
    mkdirSync(join(dir, 'run/systemd'), { recursive: true });
    symlinkSync('/run/systemd/resolve/stub-resolv.conf', join(dir, 'etc/resolv.conf')); // written through, it lands out here
  }

  function sandbox(opts: { image: 'good' | 'corrupt'; cmdline?: string; memAvailableKiB?: number }): string {
    const s = mkdtempSync('/tmp/lc-init-root-');
    for (const d of ['bin', 'etc/lilcluster', 'proc', 'sys', 'dev', 'run', 'tmp']) mkdirSync(join(s, d), { recursive: true });
    copyFileSync('/bin/busybox', join(s, 'bin/busybox'));
    writeFileSync(join(s, 'etc/resolv.conf'), 'nameserver 10.0.0.1\n');
    writeFileSync(join(s, 'etc/hosts'), '127.0.0.1 localhost\n');
    writeFileSync(
      join(s, 'etc/lilcluster/root.env'),
      'LC_ROOT_IMAGE=tiny\nLC_ROOT_VERSION=0123456789ab\nLC_ROOT_SOURCE=packages: none\nLC_ROOT_PATH=/bin:/usr/bin\nLC_ROOT_HEALTH=\nLC_ROOT_BYTES=2500000\n',
    );
    if (opts.image === 'good') {
      const tree = join(s, '.tree');
      imageTree(tree);
      execFileSync('mksquashfs', [tree, join(s, 'root.img'), '-quiet', '-no-progress', '-comp', 'zstd', '-all-root'], { stdio: 'ignore' });
      rmSync(tree, { recursive: true });
    } else writeFileSync(join(s, 'root.img'), Buffer.alloc(256 * 1024, 0x5a));
    const meminfo =
      opts.memAvailableKiB === undefined
        ? ''
        : `echo 'MemAvailable: ${opts.memAvailableKiB} kB' > /tmp/meminfo; mount --bind /tmp/meminfo /proc/meminfo`;
    writeFileSync(
      join(s, 'harness.sh'),
      `/bin/busybox --install -s /bin
export PATH=/bin
${meminfo}
RUN=/run/lilcluster
mkdir -p $RUN
say() { echo "lc-init: $*"; }
cmdline_arg() {
  for a in ${opts.cmdline ?? ''}; do case "$a" in "$1"=*) echo "\${a#*=}"; return 0 ;; esac; done
  return 1
}
uptime_s() { cut -d' ' -f1 /proc/uptime; }
lease_get() { echo 10.0.0.5; }
hostname node-test
${rootCode}
[ -f /root.img ] && setup_root
root_etc
echo "TASK_ROOT=$TASK_ROOT|ROOT_ERROR=$ROOT_ERROR|ROOT_PATH=$ROOT_PATH|IMAGE=$ROOT_IMAGE $ROOT_VERSION"
[ -f /harness.sh ] && echo "sandbox root intact"
[ -f /root.img ] && echo "root.img kept"
if [ -n "$TASK_ROOT" ]; then
  chroot "$TASK_ROOT" /bin/sh -c 'cat /etc/marker; cat /etc/resolv.conf /etc/hostname; tail -n1 /etc/hosts; test -d /proc/self && echo proc; test -c /dev/null && echo dev; echo w > /written && echo writable'
  test -L "$TASK_ROOT/tmp" || echo "tmp is a directory"
fi
`,
    );
    // Mounts made here (proc on the sandbox, /init's loop, overlay and binds) die with the namespace.
    const out = execFileSync(
      'unshare',
      [
        '-m',
        '--propagation',
        'private',
        'sh',
        '-c',
        `set -e; mount -t proc proc "$1/proc"; mount --bind /sys "$1/sys"; mount --bind /dev "$1/dev"; mount -t tmpfs tmpfs "$1/run"; mount -t tmpfs tmpfs "$1/tmp"; chroot "$1" /bin/busybox sh /harness.sh 2>&1`,
        'sh',
        s,
      ],
      { encoding: 'utf8', timeout: 30_000 },
    );
    rmSync(s, { recursive: true, force: true });
    return out;
  }

  it('mounts the squashfs under a tmpfs overlay with the node views bound, keeping /root.img', () => {
    const out = sandbox({ image: 'good' });
    expect(out).toMatch(
      /lc-init: root: image tiny 0123456789ab \(packages: none\), root.img 0 MiB, unpacked 2 MiB, squashfs \+ tmpfs overlay at \/run\/lilcluster\/root/,
    );
    expect(out).toMatch(/lc-init: root: the image's \/tmp is not a directory: replaced by one/);
    expect(out).toContain('TASK_ROOT=/run/lilcluster/root|ROOT_ERROR=|ROOT_PATH=/bin:/usr/bin|IMAGE=tiny 0123456789ab');
    expect(out).toContain('sandbox root intact\nroot.img kept\n');
    expect(out).toContain(`${MARKER}nameserver 10.0.0.1\nnode-test\n10.0.0.5 node-test\nproc\ndev\nwritable\ntmp is a directory\n`);
  });

  it('copies the tree into tmpfs with lc.root=unpack, and drops /root.img', () => {
    const out = sandbox({ image: 'good', cmdline: 'quiet lc.root=unpack' });
    expect(out).toMatch(/root: image tiny .*, copied into tmpfs \(lc.root=unpack\), \d+ MiB at \/run\/lilcluster\/root/);
    expect(out).toContain('TASK_ROOT=/run/lilcluster/root|ROOT_ERROR=|');
    expect(out).not.toContain('root.img kept');
    expect(out).toContain(`${MARKER}nameserver 10.0.0.1\n`);
  });

  it('says why a corrupt image does not mount, and carries on without a root', () => {
    const out = sandbox({ image: 'corrupt' });
    expect(out).toMatch(/lc-init: root: NOT MOUNTED: image tiny 0123456789ab: \/root.img does not mount: /);
    expect(out).toMatch(
      /TASK_ROOT=\|ROOT_ERROR=image tiny 0123456789ab: \/root.img does not mount: [^|]+ \(not a valid squashfs image: rebuild the image\)\|/,
    );
    expect(out).toContain('sandbox root intact');
  });

  it('refuses a root the memory cannot hold, with the figures and what to do', () => {
    const out = sandbox({ image: 'good', cmdline: 'lc.root=unpack', memAvailableKiB: 100 * 1024 });
    expect(out).toContain(
      'lc-init: root: NOT MOUNTED: not enough memory for image tiny 0123456789ab: 100 MiB available, 130 MiB needed (the unpacked tree + 128 MiB for the agent and tasks; root.img 0 MiB, unpacked 2 MiB): give this node more memory or assign it a smaller image, or boot it without lc.root=unpack',
    );
    expect(out).toMatch(/TASK_ROOT=\|ROOT_ERROR=not enough memory/);
  });
});
