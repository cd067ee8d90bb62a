/**
 * Issue 11, points 4, 5 and 6 against real processes: a real agent (dist/bin/node-agent.mjs)
 * taking jobs from a real dispatcher (dist/bin/dispatcher.mjs) whose inputs tars are crafted
 * to escape the task's work dir — symlink chains, a write through a link, a hard link out,
 * an absolute name, device entries — and an inputs blob changed on the dispatcher's disk.
 * Nothing lands outside the work dir, each such task fails with an error naming the entry,
 * and the agent goes on taking work. A sub-second timeout and NUL bytes are refused at
 * submit; an assignment that does not validate (sent by a dispatcher through the in-memory
 * engine) costs that task only: the agent reports it and runs the next job.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import tar from 'tar-stream';
import { startAgent, startHub, waitFor, type AgentProcess, type TestHub } from '../agents/harness.js';
import { AGENT_BIN, ROOT } from '../../lab/paths.js';
import { resultsOf, startDispatcher, type DispatcherProcess, type JobView, type ResultLine } from '../../lab/dispatcher.js';
import { DISPATCHER_BIN } from '../../lab/paths.js';
import { FakeEngine } from '../agents/fake-engine.js';
import { tempDir } from '../../unit/agent/temp-dirs.js';

type Entry =
  | { type: 'file'; name: string; body: string }
  | { type: 'directory'; name: string }
  | { type: 'symlink' | 'link'; name: string; linkname: string }
  | { type: 'character-device'; name: string };

async function tarOf(entries: Entry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c: unknown) => void chunks.push(c as Buffer));
  const done = new Promise<void>((r) => pack.on('end', () => r()));
  for (const e of entries) {
    if (e.type === 'file') pack.entry({ name: e.name, size: Buffer.byteLength(e.body), mode: 0o644 }, e.body);
    else if (e.type === 'directory') pack.entry({ name: e.name, type: 'directory', mode: 0o755 });
    else if (e.type === 'character-device') pack.entry({ name: e.name, type: e.type, devmajor: 1, devminor: 5 });
    else pack.entry({ name: e.name, type: e.type, linkname: e.linkname });
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

let disp: DispatcherProcess;
let agent: AgentProcess;
/** sandbox/x/y/agent is the agent's work dir; its tasks unpack under agent/tasks/<task>-<attempt>. */
let sandbox: string;
let agentWork: string;
let token: string;

beforeAll(async () => {
  if (!existsSync(DISPATCHER_BIN) || !existsSync(AGENT_BIN)) execFileSync('make', ['build'], { cwd: ROOT, stdio: 'inherit' });
  disp = await startDispatcher();
  token = readFileSync(join(disp.dataDir, 'admin.token'), 'utf8').trim();
  sandbox = tempDir('lc-sec-unpack-');
  agentWork = join(sandbox, 'x/y/agent');
  mkdirSync(agentWork, { recursive: true });
  writeFileSync(join(sandbox, 'x/y/victim'), 'victim');
  agent = startAgent([
    '--dispatcher',
    disp.url,
    '--enroll-token',
    readFileSync(join(disp.dataDir, 'enroll.token'), 'utf8').trim(),
    '--dispatcher-key',
    join(disp.dataDir, 'identity.pub'),
    '--mac',
    '52:54:00:5e:c0:01',
    '--work-dir',
    agentWork,
    '--slots',
    '1',
  ]);
  await waitFor('agent welcomed', () => disp.logs.some((l) => l.msg === 'agent welcomed'), 30_000);
});

afterAll(async () => {
  await agent?.kill('SIGKILL');
  await disp?.stop('SIGKILL');
});

async function upload(body: Buffer): Promise<string> {
  const res = await fetch(`${disp.url}/api/v1/blobs`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-tar' },
    body,
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as { id: string }).id;
}

async function submit(body: Record<string, unknown>): Promise<Response> {
  return fetch(`${disp.url}/api/v1/jobs`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
}

/** Runs a one-task job to its end (one attempt) and returns its result line. */
async function runJob(body: Record<string, unknown>): Promise<ResultLine> {
  const job = await disp.api<JobView>('POST', '/api/v1/jobs', { maxAttempts: 1, speculative: false, timeoutSeconds: 60, ...body });
  const end = Date.now() + 60_000;
  for (;;) {
    const j = await disp.api<JobView>('GET', `/api/v1/jobs/${job.id}`);
    if (j.counts.done + j.counts.failed + j.counts.cancelled === j.counts.total) break;
    if (Date.now() > end) throw new Error(`job ${job.id} did not end: ${JSON.stringify(j.counts)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return (await resultsOf(disp, job.id))[0]!;
}

/**
 * What a crafted tar left outside the task work dirs: anything in the sandbox beyond the
 * scaffolding and the agent's own files, anything in agent/tasks that is not a task's work
 * dir (or its inputs download), and any change to the victim.
 */
function escapes(): string[] {
  const found: string[] = [];
  const expect = new Map<string, RegExp>([
    [sandbox, /^x$/],
    [join(sandbox, 'x'), /^y$/],
    [join(sandbox, 'x/y'), /^(agent|victim)$/],
    [join(agentWork, 'tasks'), /^\d+-\d+(\.inputs)?$/],
  ]);
  for (const [dir, ok] of expect) for (const name of readdirSync(dir)) if (!ok.test(name)) found.push(join(dir, name));
  for (const name of readdirSync(agentWork)) if (/pwned|victim|^[abcdhl]$/.test(name)) found.push(join(agentWork, name));
  const v = join(sandbox, 'x/y/victim');
  if (readFileSync(v, 'utf8') !== 'victim' || lstatSync(v).nlink !== 1) found.push(`${v} changed or linked`);
  return found;
}

describe('agent inputs: crafted tars through a real dispatcher and agent', () => {
  it.each<[string, () => Entry[], RegExp]>([
    [
      'a symlink chain (d/a -> .., d/a/b -> .., d/a/b/c -> ..) written through d/a/b/c',
      () => [
        { type: 'directory', name: 'd' },
        { type: 'symlink', name: 'd/a', linkname: '..' },
        { type: 'symlink', name: 'd/a/b', linkname: '..' },
        { type: 'symlink', name: 'd/a/b/c', linkname: '..' },
        { type: 'file', name: 'd/a/b/c/pwned', body: 'escaped\n' },
      ],
      /inputs tar symlink "d\/a\/b" goes through the symlink "d\/a"/,
    ],
    [
      'a symlink, then a file of the same name',
      () => [
        { type: 'file', name: 'target.txt', body: 'inside\n' },
        { type: 'symlink', name: 'l', linkname: 'target.txt' },
        { type: 'file', name: 'l', body: 'through the link\n' },
      ],
      /inputs tar entry "l" would write through the symlink "l"/,
    ],
    [
      'a hard link to a file outside, then a write to it',
      () => [
        { type: 'link', name: 'h', linkname: join(sandbox, 'x/y/victim') },
        { type: 'file', name: 'h', body: 'overwritten\n' },
      ],
      /inputs tar hard link "h" points outside the work dir/,
    ],
    [
      'an absolute name',
      () => [{ type: 'file', name: join(sandbox, 'x/y/pwned-abs'), body: 'x' }],
      /would land outside the work dir \(absolute name\)/,
    ],
  ])('%s: the task fails naming the entry, nothing is written outside, the command never runs', async (_what, entries, re) => {
    const id = await upload(await tarOf(entries()));
    const r = await runJob({ command: ['echo', 'ran'], inputs: id });
    expect(escapes()).toEqual([]);
    expect(r.state).toBe('failed');
    expect(r.result?.error).toMatch(re);
    expect(r.result?.stdout).toBe('');
  });

  it('drops device entries and runs the task', async () => {
    const id = await upload(
      await tarOf([
        { type: 'character-device', name: 'dev/zero' },
        { type: 'file', name: 'ok.txt', body: 'ok\n' },
      ]),
    );
    const r = await runJob({ command: 'test ! -e dev/zero && cat ok.txt', inputs: id });
    expect(r).toMatchObject({ state: 'done', result: { exitCode: 0, stdout: 'ok\n' } });
  });

  it('detects an inputs blob changed on the dispatcher disk by its sha256, and unpacks nothing', async () => {
    const id = await upload(await tarOf([{ type: 'file', name: 'in.txt', body: 'genuine inputs\n' }]));
    const file = join(disp.dataDir, 'blobs', `${id}.tar`);
    const bytes = readFileSync(file);
    const at = bytes.indexOf('genuine');
    bytes.write('tampered', at); // same size: the HTTP length still matches
    writeFileSync(file, bytes);
    const r = await runJob({ command: 'cat in.txt', inputs: id });
    expect(r.state).toBe('failed');
    expect(r.result?.error).toMatch(
      new RegExp(`sha256 mismatch \\(expected ${id}, got [0-9a-f]{64} for ${bytes.length} bytes\\); nothing unpacked`),
    );
    expect(r.result?.stdout).toBe('');
  });

  it('refuses a sub-second timeout and NUL bytes at submit, naming the field, with a stable code', async () => {
    for (const [body, re] of [
      [{ command: ['true'], timeoutSeconds: 0.0001 }, /^timeoutSeconds: must be between 1 and 2592000 seconds/],
      [{ command: ['echo', 'a\0b'] }, /^command\[1\]: contains a NUL byte/],
      [{ command: ['true'], env: { K: 'v\0' } }, /^env\.K: contains a NUL byte/],
      [{ command: ['echo', '{x}'], params: [{ x: '\0' }] }, /^params\[0\]\.x: contains a NUL byte/],
    ] as const) {
      const res = await submit(body);
      expect(res.status).toBe(400);
      const e = ((await res.json()) as { error: { code: string; message: string } }).error;
      expect(e.code).toBe('DSP_ERR_BAD_SUBMISSION');
      expect(e.message).toMatch(re);
    }
    // The CLI checks the same bounds before sending anything.
    const ctl = spawnSync(process.execPath, [join(ROOT, 'dist/bin/dispatcherctl.mjs'), 'submit', '--timeout', '0.0001', '--', 'true'], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LILCLUSTER_URL: disp.url, LILCLUSTER_DATA_DIR: disp.dataDir },
      encoding: 'utf8',
    });
    expect(ctl.status).toBe(2);
    expect(ctl.stderr).toMatch(/--timeout 0\.0001: must be between 1 and 2592000 seconds/);
  });

  it('the agent still takes work after all of the above', async () => {
    const r = await runJob({ command: ['echo', 'still working'] });
    expect(r).toMatchObject({ state: 'done', result: { exitCode: 0, stdout: 'still working\n' } });
    expect(escapes()).toEqual([]);
  });
});

describe('agent: an assignment that does not validate', () => {
  let hub: TestHub | undefined;
  let a: AgentProcess | undefined;
  afterAll(async () => {
    await a?.kill('SIGKILL');
    await hub?.stop();
  });

  it('costs that task only: it is reported failed with the reason, and the next job runs', async () => {
    const engine = new FakeEngine();
    hub = await startHub(engine);
    a = startAgent([
      '--dispatcher',
      hub.url,
      '--enroll-token',
      hub.enrollToken,
      '--dispatcher-key',
      hub.pubKeyFile,
      '--mac',
      '52:54:00:5e:c0:02',
      '--work-dir',
      join(hub.dataDir, 'agent'),
      '--slots',
      '1',
    ]);
    // timeoutMs 0: what a sub-millisecond timeoutSeconds used to become.
    const [bad] = engine.add([{ command: ['echo', 'bad'], timeoutMs: 0, maxAttempts: 1 }]);
    const refused = await waitFor('the bad task reported', () => engine.results.get(bad!.taskId));
    expect(refused).toMatchObject({ exitCode: null, stdout: '' });
    expect(refused.error).toMatch(/assignment refused by the agent: \/timeoutMs/);
    const [next] = engine.add([{ command: ['echo', 'next'] }]);
    const ok = await waitFor('the next task done', () => engine.results.get(next!.taskId), 20_000);
    expect(ok).toMatchObject({ exitCode: 0, stdout: 'next\n' });
    await a.waitForLine(/task \d+ attempt 1 refused: assignment refused by the agent/);
  });
});
