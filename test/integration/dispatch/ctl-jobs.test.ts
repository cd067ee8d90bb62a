/**
 * dispatcherctl's job commands as processes against a real dispatcher with one real agent:
 * inputs uploaded from a directory and fetched by the agent, `--wait` and its exit code,
 * bad params files named by line, tasks / task / results / cancel, and `--json`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { agentFor, waitFor, type AgentProcess } from '../agents/harness.js';
import { ROOT } from '../../lab/paths.js';
import { startDispatcher, type DispatcherProcess } from '../../lab/dispatcher.js';
import { DISPATCHER_BIN } from '../../lab/paths.js';

const CTL_BIN = join(ROOT, 'dist/bin/dispatcherctl.mjs');
let work: string;
let disp: DispatcherProcess;
let agent: AgentProcess;

beforeAll(async () => {
  if (!existsSync(DISPATCHER_BIN) || !existsSync(CTL_BIN)) execFileSync('make', ['build'], { cwd: ROOT, stdio: 'inherit' });
  work = mkdtempSync(join(tmpdir(), 'lc-dispatch-ctl-'));
  disp = await startDispatcher({ dataDir: join(work, 'data') });
  agent = agentFor(disp, '52:54:00:c7:00:01', ['--slots', '2']);
  await waitFor('agent welcomed', () => disp.logs.some((l) => l.msg === 'agent welcomed'), 30_000);
});

afterAll(async () => {
  await agent?.kill('SIGKILL');
  await disp?.stop('SIGKILL');
  rmSync(work, { recursive: true, force: true });
});

function ctl(args: string[], token = true): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      LILCLUSTER_URL: disp.url,
      LILCLUSTER_DATA_DIR: token ? disp.dataDir : '/nonexistent-lc',
    };
    const child = spawn(process.execPath, [CTL_BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('dispatcherctl job commands', () => {
  it('uploads a directory as inputs, which the agent unpacks; --wait exits 0 when every task is done', async () => {
    const inputs = join(work, 'inputs');
    mkdirSync(join(inputs, 'sub'), { recursive: true });
    writeFileSync(join(inputs, 'sub', 'words.txt'), 'pear\napple\nfig\n');
    const r = await ctl(['submit', '--inputs', inputs, '--wait', '--shell', '--', 'sort sub/words.txt | tee out/sorted.txt']);
    expect(r.code, r.stderr).toBe(0);
    const job = Number(r.stdout.trim().split('\n')[0]);
    expect(r.stderr).toMatch(/inputs: .* uploaded/);
    expect(r.stderr).toMatch(new RegExp(`job ${job} done: 1 done, 0 failed`));
    const tasks = JSON.parse((await ctl(['tasks', String(job), '--json'])).stdout) as { tasks: { id: number; state: string }[] };
    expect(tasks.tasks).toMatchObject([{ state: 'done' }]);
    const task = await ctl(['task', String(tasks.tasks[0]!.id)]);
    expect(task.stdout).toMatch(/^state: +done$/m);
    expect(task.stdout).toContain('--- stdout\napple\nfig\npear\n');
  });

  it('--wait exits 1 when tasks failed, and the results say which', async () => {
    const params = join(work, 'codes.jsonl');
    writeFileSync(params, '{"code": 0}\n{"code": 3}\n{"code": 0}\n');
    const r = await ctl(['submit', '--params', params, '--wait', '--', 'sh', '-c', 'exit {code}']);
    expect(r.code).toBe(1);
    const job = r.stdout.trim();
    const lines = (await ctl(['results', job, '--format', 'jsonl'])).stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { state: string; params: { code: string }; result: { exitCode: number } });
    expect(lines.map((l) => [l.params.code, l.state, l.result.exitCode])).toEqual([
      ['0', 'done', 0],
      ['3', 'failed', 3],
      ['0', 'done', 0],
    ]);
  });

  it('refuses a params file with a missing column, naming the line, and queues nothing', async () => {
    const before = JSON.parse((await ctl(['jobs', '--json'])).stdout).jobs.length as number;
    const params = join(work, 'bad.csv');
    writeFileSync(params, 'a,b\n1,2\n3,4\n5\n');
    const r = await ctl(['submit', '--params', params, '--', 'echo', '{a}', '{b}']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('params line 4: 1 field, but the header has 2 columns (a, b)');
    expect(JSON.parse((await ctl(['jobs', '--json'])).stdout).jobs.length).toBe(before);
  });

  it('needs the admin token to submit or cancel, not to read', async () => {
    const r = await ctl(['submit', '--', 'true'], false);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/admin token/);
    expect((await ctl(['jobs'], false)).code).toBe(0);
  });

  it('cancels a job, stopping its running tasks, and --json prints the API view', async () => {
    const r = await ctl(['submit', '--json', '--params', writeRows(join(work, 'long.csv'), 6), '--', 'sleep', '{s}']);
    const job = JSON.parse(r.stdout) as { id: number; counts: { total: number } };
    expect(job.counts.total).toBe(6);
    for (const end = Date.now() + 15_000; Date.now() < end; ) {
      const t = JSON.parse((await ctl(['tasks', String(job.id), '--state', 'running', '--json'])).stdout) as { tasks: unknown[] };
      if (t.tasks.length === 2) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    const c = await ctl(['cancel', String(job.id), '--json']);
    expect(JSON.parse(c.stdout)).toMatchObject({ id: job.id, state: 'cancelled', counts: { cancelled: 6 } });
    // The agent was told to stop: its slots free up at once for the next job.
    const next = await ctl(['submit', '--wait', '--', 'true']);
    expect(next.code).toBe(0);
    expect((await ctl(['cancel'])).code).toBe(2);
  });
});

function writeRows(path: string, n: number): string {
  writeFileSync(path, 's\n' + Array.from({ length: n }, () => '30').join('\n') + '\n');
  return path;
}
