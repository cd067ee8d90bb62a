import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { TaskCgroups } from '../../../node-agent/src/cgroup.js';
import { tempDir } from '../../unit/agent/temp-dirs.js';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { ProcessRunner, type RunnerOptions } from '../../../node-agent/src/runner.js';
import { groupMembers } from '../../../node-agent/src/proc.js';
import type { TaskAssignment, TaskResult } from '../../../dispatcher/src/protocol/messages.js';
import { LAUNCHERS, nativeLauncher, task } from './launchers.js';

// Set before the runner reads the environment (once): what a host passes on, and the agent's secrets.
process.env.LC_TOKEN = 'secret-agent-token';
process.env.LC_ENROLL_TOKEN = 'secret-enroll-token';
process.env.INHERITED = 'from-the-host';

let server: Server;
let httpBase: string;
let inputsSha256: string;
const tasksDir = tempDir('lc-runner-');

async function tarOf(files: Record<string, string>): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c: unknown) => void chunks.push(c as Buffer));
  const done = new Promise<void>((r) => pack.on('end', () => r()));
  for (const [name, body] of Object.entries(files)) pack.entry({ name, size: Buffer.byteLength(body) }, body);
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

beforeAll(async () => {
  const inputs = gzipSync(await tarOf({ 'data/in.txt': 'from the inputs tar\n' }));
  inputsSha256 = createHash('sha256').update(inputs).digest('hex');
  server = createServer((req, res) => {
    if (req.url === '/inputs/1') return res.end(inputs);
    res.statusCode = 404;
    res.end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  httpBase = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});
afterAll(() => server?.close());

/** The pids a task printed (`echo $$ $!`), all of which must be gone with its group. */
function pidsOf(r: TaskResult): number[] {
  return r.stdout
    .trim()
    .split(/\s+/)
    .filter((x) => /^\d+$/.test(x))
    .map(Number);
}
function alive(pid: number): boolean {
  try {
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'latin1')); // a zombie is dead, only not yet reaped
  } catch {
    return false;
  }
}

/** A runner over the test's task dir and HTTP server, with small limits. */
function testRunner(launcher: RunnerOptions['launcher'], over: Partial<RunnerOptions> = {}): ProcessRunner {
  return new ProcessRunner({
    tasksDir,
    maxOutputBytes: 1 << 20,
    maxOutputsBytes: 1 << 20,
    maxInputBytes: 1 << 20,
    killGraceMs: 500,
    httpBase,
    userAgent: 'test',
    launcher,
    ...over,
  });
}

describe.each(LAUNCHERS)('process runner (%s)', (_kind, makeLauncher) => {
  const launcher = makeLauncher();
  const runner = (over: Partial<RunnerOptions> = {}): ProcessRunner => testRunner(launcher, over);
  const run = (t: TaskAssignment, r = runner(), onProgress: (f: number) => void = () => {}): Promise<TaskResult> =>
    r.start(t, onProgress).result;

  it('uses the launcher it was given', () => {
    expect(runner().launcher).toBe(launcher);
  });

  it("runs a shell command with the task environment, never the agent's token", async () => {
    const r = await run(
      task('echo "$LC_TASK_ID/$LC_ATTEMPT $FOO $INHERITED"; env | grep -c "^LC_TOKEN\\|^LC_ENROLL_TOKEN"; echo err >&2; exit 3', {
        env: { FOO: 'bar' },
        attempt: 2,
      }),
    );
    expect(r).toMatchObject({ exitCode: 3, signal: null, timedOut: false, error: null, stderr: 'err\n', stdoutTruncated: false });
    expect(r.stdout).toBe(`${r.taskId}/2 bar from-the-host\n0\n`);
  });

  it('runs an argv command directly and feeds stdin', async () => {
    const r = await run(task(['/bin/cat'], { stdinB64: Buffer.from('from stdin').toString('base64') }));
    expect(r).toMatchObject({ exitCode: 0, stdout: 'from stdin' });
  });

  it('reports a command that cannot start', async () => {
    const r = await run(task(['/nonexistent/prog']));
    expect(r.exitCode).toBeNull();
    expect(r.error).toMatch(/cannot start \/nonexistent\/prog: ENOENT/);
  });

  it('reports death by signal', async () => {
    const r = await run(task('kill -9 $$'));
    expect(r).toMatchObject({ exitCode: null, signal: 'SIGKILL', timedOut: false });
  });

  it('kills the whole process group at the timeout, background children included', async () => {
    const t0 = Date.now();
    const r = await run(task('sleep 30 & echo $$ $!; sleep 30', { timeoutMs: 300 }));
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(r).toMatchObject({ timedOut: true, exitCode: null, signal: 'SIGTERM' });
    expect(r.error).toMatch(/killed at its timeout of 300 ms/);
    const [pgid, bg] = pidsOf(r);
    expect(groupMembers(pgid!)).toEqual([]);
    expect(alive(bg!)).toBe(false);
  });

  it('SIGKILLs a group that ignores SIGTERM after the grace', async () => {
    const t0 = Date.now();
    const r = await run(task(`trap '' TERM; echo $$; sleep 30 & sleep 30`, { timeoutMs: 200 }), runner({ killGraceMs: 300 }));
    const took = Date.now() - t0;
    expect(r).toMatchObject({ timedOut: true, signal: 'SIGKILL' });
    expect(took).toBeGreaterThanOrEqual(480);
    expect(took).toBeLessThan(5000);
    expect(groupMembers(pidsOf(r)[0]!)).toEqual([]);
  });

  it('kills what a task left running in its group when it exits', async () => {
    const r = await run(task('sleep 30 & echo $$ $!'));
    expect(r.exitCode).toBe(0);
    const [pgid, bg] = pidsOf(r);
    expect(groupMembers(pgid!)).toEqual([]);
    expect(alive(bg!)).toBe(false);
  });

  it('cancels a running task', async () => {
    const h = runner().start(task('echo $$; sleep 30'), () => {});
    await new Promise((r) => setTimeout(r, 200));
    h.cancel('test');
    const r = await h.result;
    expect(r).toMatchObject({ signal: 'SIGTERM', timedOut: false });
    expect(r.durationMs).toBeLessThan(3000);
    expect(groupMembers(pidsOf(r)[0]!)).toEqual([]);
  });

  it('keeps stdout and stderr up to the limit and marks the truncation', async () => {
    const r = await run(
      task('head -c 5000 /dev/zero | tr "\\0" a; head -c 10 /dev/zero | tr "\\0" b >&2'),
      runner({ maxOutputBytes: 1000 }),
    );
    expect(r.stdout).toBe('a'.repeat(1000));
    expect(r.stdoutTruncated).toBe(true);
    expect(r.stderr).toBe('b'.repeat(10));
    expect(r.stderrTruncated).toBe(false);
  });

  it('parses PROGRESS lines', async () => {
    const seen: number[] = [];
    const r = await run(task('echo PROGRESS 0.25; echo working; echo "PROGRESS 0.5"; echo PROGRESS 2; echo PROGRESS 1'), runner(), (f) =>
      seen.push(f),
    );
    expect(seen).toEqual([0.25, 0.5, 1]);
    expect(r.stdout).toContain('working');
  });

  it('returns the files written under out/ as a gzip tar and removes the work dir', async () => {
    const t = task('mkdir -p out/sub && echo result > out/r.txt && echo deep > out/sub/d.txt && pwd');
    const r = await run(t);
    expect(r.exitCode).toBe(0);
    const workDir = r.stdout.trim();
    expect(workDir).toBe(join(tasksDir, `${t.taskId}-1`));
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
    expect(files).toEqual({ 'r.txt': 'result\n', 'sub/d.txt': 'deep\n' });
    expect(existsSync(workDir)).toBe(false);
    expect((await run(task('true'))).outputsTarGzB64).toBeNull();
  });

  it('refuses outputs over the limit, still reporting the run', async () => {
    const r = await run(task('head -c 5000 /dev/zero > out/big; exit 0'), runner({ maxOutputsBytes: 1000 }));
    expect(r).toMatchObject({ exitCode: 0, outputsTarGzB64: null });
    expect(r.error).toMatch(/outputs not returned: out\/ holds more than 1000 bytes/);
  });

  it('unpacks the inputs tar before running, and reports inputs it cannot fetch', async () => {
    const r = await run(task('cat data/in.txt', { inputsPath: '/inputs/1', inputsSha256 }));
    expect(r).toMatchObject({ exitCode: 0, stdout: 'from the inputs tar\n' });
    const missing = await run(task('true', { inputsPath: '/inputs/404', inputsSha256 }));
    expect(missing.error).toMatch(/inputs \/inputs\/404: HTTP 404/);
    expect(missing.exitCode).toBeNull();
  });

  it('runs in a cwd inside the work dir, and refuses one outside or missing', async () => {
    expect((await run(task('pwd', { inputsPath: '/inputs/1', inputsSha256, cwd: 'data' }))).stdout.trim()).toMatch(/\/data$/);
    expect((await run(task('pwd', { cwd: '../..' }))).error).toMatch(/outside the task's work dir/);
    expect((await run(task('pwd', { cwd: 'nope' }))).error).toMatch(/does not exist/);
  });

  it('measures peak memory from /proc', async () => {
    const r = await run(task([process.execPath, '-e', 'const b = Buffer.alloc(150 * 1024 * 1024, 1); setTimeout(() => b.length, 700)']));
    expect(r.exitCode).toBe(0);
    expect(r.maxRssKiB).toBeGreaterThan(150 * 1024);
    expect(r.maxRssKiB).toBeLessThan(400 * 1024);
  });

  it('streams exec output and reports its end', async () => {
    const chunks: string[] = [];
    const o = await runner().exec('echo out; echo err >&2; exit 4', 5000, (s, c) => chunks.push(`${s}:${c}`));
    expect(o).toMatchObject({ exitCode: 4, signal: null, timedOut: false });
    expect(chunks.sort()).toEqual(['stderr:err\n', 'stdout:out\n']);
    const slow = await runner().exec(['sleep', '30'], 200, () => {});
    expect(slow).toMatchObject({ timedOut: true, error: 'killed at its timeout of 200 ms' });
  });

  it('gives the task default signal handling (SIGPIPE, which the agent ignores)', async () => {
    const r = await run(task('yes | head -c 4; echo " $?"'));
    expect(r).toMatchObject({ exitCode: 0, stdout: 'y\ny\n 0\n', stderr: '' });
  });

  it('reports progress while the task runs, not only at its end', async () => {
    const seen: { f: number; at: number }[] = [];
    const t0 = Date.now();
    const r = await run(task('echo PROGRESS 0.5; sleep 1.5; echo PROGRESS 0.9'), runner(), (f) => seen.push({ f, at: Date.now() - t0 }));
    expect(seen.map((s) => s.f)).toEqual([0.5, 0.9]);
    expect(seen[0]!.at).toBeLessThan(r.durationMs - 500);
  });

  it('keeps output written over a long run whole and in order', async () => {
    const r = await run(task('for i in 1 2 3 4 5; do echo "line $i"; echo "err $i" >&2; sleep 0.15; done'));
    expect(r.stdout).toBe('line 1\nline 2\nline 3\nline 4\nline 5\n');
    expect(r.stderr).toBe('err 1\nerr 2\nerr 3\nerr 4\nerr 5\n');
  });

  it("drops a chatty task's output past the limit, still seeing its last PROGRESS line", async () => {
    const seen: number[] = [];
    const r = await run(
      task('head -c 30000000 /dev/zero | tr "\\0" a; echo; echo PROGRESS 0.75; sleep 0.3; head -c 3000000 /dev/zero >&2'),
      runner({ maxOutputBytes: 1000 }),
      (f) => seen.push(f),
    );
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe('a'.repeat(1000));
    expect(r).toMatchObject({ stdoutTruncated: true, stderrTruncated: true });
    expect(r.stderr).toBe('\0'.repeat(1000));
    expect(seen).toEqual([0.75]);
  });

  it('feeds a stdin larger than a pipe holds', async () => {
    const big = Buffer.alloc(1 << 20, 'x');
    const r = await run(task('wc -c', { stdinB64: big.toString('base64') }));
    expect(r.stdout.trim()).toBe(String(1 << 20));
  });

  it("looks a program up in the task's own PATH", async () => {
    const bin = tempDir('lc-runner-bin-');
    writeFileSync(join(bin, 'lc-test-hello'), '#!/bin/sh\necho "hello from $0"\n', { mode: 0o755 });
    const r = await run(task(['lc-test-hello'], { env: { PATH: `${bin}:/usr/bin:/bin` } }));
    expect(r).toMatchObject({ exitCode: 0, error: null, stdout: `hello from ${join(bin, 'lc-test-hello')}\n` });
  });

  it('reports a program missing from PATH, and one that is not executable', async () => {
    const missing = await run(task(['lc-no-such-program']));
    expect(missing).toMatchObject({ exitCode: null, signal: null });
    expect(missing.error).toMatch(/cannot start lc-no-such-program: ENOENT/);
    const dir = tempDir('lc-runner-noexec-');
    writeFileSync(join(dir, 'plain'), '#!/bin/sh\necho no\n', { mode: 0o644 });
    const noexec = await run(task([join(dir, 'plain')]));
    expect(noexec.exitCode).toBeNull();
    expect(noexec.error).toMatch(/cannot start .*plain: EACCES/);
  });

  it('refuses an argument holding a NUL byte, as a failed task', async () => {
    const r = await run(task(['/bin/echo', 'a\0b']));
    expect(r.exitCode).toBeNull();
    expect(r.error).toBeTruthy();
  });

  it('leaves no task work dirs behind', () => {
    expect(readdirSync(tasksDir)).toEqual([]);
  });
});

// A stand-in cgroup tree (plain files, cgroup.test.ts): what each launcher does with a task's
// cgroup. The kernel's side (CLONE_INTO_CGROUP, limits, oom) is the e2e resources test's.
describe.each(LAUNCHERS)('process runner with cgroups (%s)', (kind, makeLauncher) => {
  const launcher = makeLauncher();
  const cgroupsOn = (root: string): TaskCgroups => {
    writeFileSync(join(root, 'cgroup.controllers'), 'cpu memory');
    const setup = TaskCgroups.setup({
      mounts: `cgroup2 ${root} cgroup2 rw 0 0\n`,
      selfCgroup: '0::/',
      taskMemMiB: 100,
      reserveMiB: 10,
      name: 'r',
      pid: 1,
    });
    if (!setup.enforced) throw new Error(setup.reason);
    return setup.cgroups;
  };
  const runner = (cgroups: TaskCgroups) => testRunner(launcher, { cgroups });

  it(
    kind === 'native'
      ? 'starts the task in its cgroup: a directory that is no cgroup is a start failure (EBADF)'
      : 'starts the task through the entering shell, which writes its pid',
    async () => {
      const root = tempDir('lc-runner-cg-');
      const t = task(['/bin/echo', 'in'], { resources: { cores: 1, memMiB: 16, gpus: 0 } });
      const r = await runner(cgroupsOn(root)).start(t, () => {}).result;
      const procsFile = join(root, `lilcluster-r/tasks/${t.taskId}-1/cgroup.procs`);
      const procs = existsSync(procsFile) ? readFileSync(procsFile, 'utf8') : '';
      if (kind === 'native') {
        expect(launcher.intoCgroup).toBe(true);
        expect(r).toMatchObject({ exitCode: null, stdout: '', error: 'cannot start /bin/echo: EBADF (clone3)' });
        expect(procs).toBe(''); // nothing written: the kernel places the process
      } else {
        expect(launcher.intoCgroup).toBe(false);
        expect(r).toMatchObject({ exitCode: 0, error: null, stdout: 'in\n' });
        expect(Number(procs.trim())).toBeGreaterThan(0);
      }
    },
  );

  it('reports a missing command as a start failure, not as an exit 127', async () => {
    const r = await runner(cgroupsOn(tempDir('lc-runner-cg-'))).start(task(['lc-no-such-program']), () => {}).result;
    expect(r).toMatchObject({ exitCode: null, signal: null, error: expect.stringMatching(/^cannot start lc-no-such-program: ENOENT/) });
  });
});

describe('process runner (native only)', () => {
  const runner = () => testRunner(nativeLauncher());

  // child_process passes on whatever descriptor the agent holds without FD_CLOEXEC (vitest's, here).
  it('gives the task no descriptors beyond stdin, stdout and stderr', async () => {
    const r = await runner().start(task(['/bin/ls', '/proc/self/fd']), () => {}).result;
    expect(r.stdout.trim().split('\n')).toEqual(['0', '1', '2', '3']); // 3: ls reading the directory
  });

  it("reports the peak memory of a task too short to sample when it is above the agent's (wait4)", async () => {
    // Above this process's own peak, ru_maxrss is the task's: exact, however short the task.
    const mib = Math.ceil(process.resourceUsage().maxRSS / 1024) + 100;
    const r = await runner().start(task(['/bin/dd', 'if=/dev/zero', 'of=/dev/null', `bs=${mib}M`, 'count=1', 'status=none']), () => {})
      .result;
    expect(r.exitCode).toBe(0);
    expect(r.durationMs).toBeLessThan(2000);
    expect(r.maxRssKiB).toBeGreaterThan(mib * 1024);
    expect(r.maxRssKiB).toBeLessThan((mib + 50) * 1024);
  });

  it("does not pass the agent's own peak off as a short task's", async () => {
    const r = await runner().start(task(['/bin/true']), () => {}).result;
    expect(r.exitCode).toBe(0);
    // ru_maxrss of a posix_spawn child carries the agent's peak: not trusted below it, and no sample yet.
    expect(r.maxRssKiB === null || r.maxRssKiB < process.resourceUsage().maxRSS).toBe(true);
  });
});
