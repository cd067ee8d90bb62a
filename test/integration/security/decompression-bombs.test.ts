/**
 * Attack: gzip bombs in results and outputs, against the real dispatcher process (default
 * limits) with a crafted agent speaking the real protocol (RawClient), while a real agent
 * runs a normal job beside it.
 *
 * - Results of tasks the sender does not hold are dropped before anything is inflated: the
 *   dispatcher's RSS stays within 64 MiB of idle (the figure is printed).
 * - A text bomb from the task's holder is cut at resultTextMaxBytes and the agent is told.
 * - An outputs bomb is refused on arrival (outputsMaxInflatedBytes), the agent is told.
 * - outputs.tar needs the admin token.
 * - A big legitimate outputs download streams while the server keeps answering quickly.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import tar from 'tar-stream';
import { agentFor, RawClient, waitFor, type AgentProcess } from '../agents/harness.js';
import { startDispatcher, type DispatcherProcess, type JobView } from '../../lab/dispatcher.js';
import { AGENT_PATH, type WireTaskResult } from '../../../dispatcher/src/protocol/messages.js';
import { DEFAULT_OUTPUTS_MAX_INFLATED_BYTES, DEFAULT_RESULT_TEXT_MAX_BYTES } from '../../../dispatcher/src/config.js';

const MiB = 1024 * 1024;
const CRAFTED_MAC = '02:00:00:00:bb:01';
const REAL_MAC = '02:00:00:00:bb:02';
/** Legitimate outputs: tasks of the download test, each returning one file of this size. */
const BIG_TASKS = 8;
const BIG_FILE = 60 * MiB;

let d: DispatcherProcess;
let crafted: RawClient;
let real: AgentProcess;
let token: string;
let beat: NodeJS.Timeout;
let sampler: NodeJS.Timeout | undefined;
/** 64 MiB of zeros as one gzip member (~64 KiB); members concatenate into a valid gzip stream. */
let member: Buffer;

/** The dispatcher's resident set (0 once it is gone). */
const rssKiB = (): number =>
  Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${d.child.pid}/status`, { encoding: 'utf8', flag: 'r' }))?.[1] ?? 0);
const bomb = (members: number): Buffer => Buffer.concat(Array.from({ length: members }, () => member));

function result(taskId: number, over: Partial<WireTaskResult> = {}): WireTaskResult {
  return {
    taskId,
    attempt: 1,
    exitCode: 0,
    signal: null,
    timedOut: false,
    error: null,
    startedAt: Date.now(),
    durationMs: 5,
    maxRssKiB: null,
    stdout: '',
    stderr: '',
    stdoutTruncated: false,
    stderrTruncated: false,
    outputsTarGzB64: null,
    ...over,
  };
}

async function tarGzOf(name: string, body: Buffer): Promise<Buffer> {
  const pack = tar.pack();
  pack.entry({ name, size: body.length }, body);
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return gzipSync(Buffer.concat(chunks), { level: 1 });
}

async function taskDetail(id: number) {
  return d.api<{ state: string; result: { stdout: string; stdoutTruncated: boolean; error: string | null; outputsBytes: number } | null }>(
    'GET',
    `/api/v1/tasks/${id}`,
  );
}

beforeAll(async () => {
  member = gzipSync(Buffer.alloc(64 * MiB), { level: 9 });
  d = await startDispatcher();
  token = readFileSync(join(d.dataDir, 'admin.token'), 'utf8').trim();
  crafted = new RawClient(d.url.replace('http', 'ws') + AGENT_PATH);
  const welcome = await crafted.handshake(
    CRAFTED_MAC,
    { kind: 'enroll', token: readFileSync(join(d.dataDir, 'enroll.token'), 'utf8').trim() },
    { slots: 16 },
  );
  expect(welcome.type).toBe('welcome');
  beat = setInterval(
    () => crafted.send({ type: 'heartbeat', ts: Date.now(), load1: 0, memUsedMiB: 1, memTotalMiB: 8192, uptimeS: 1, running: [] }),
    300,
  );
}, 60_000);

afterAll(async () => {
  clearInterval(beat);
  clearInterval(sampler);
  crafted?.close();
  await real?.kill();
  await d?.stop();
});

async function finished(id: number, timeoutMs = 60_000): Promise<JobView> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const j = await d.api<JobView>('GET', `/api/v1/jobs/${id}`);
    if (j.state !== 'active') return j;
    if (Date.now() > end) throw new Error(`job ${id} still ${j.state}: ${JSON.stringify(j.counts)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('gzip bombs in results and outputs', () => {
  it("drops stale bombs unread, cuts or refuses the holder's, and the real agent keeps working", async () => {
    // The crafted agent asks for exactly the tasks of the two attack jobs, then the real agent joins.
    crafted.send({ type: 'ready', n: 2 + BIG_TASKS });
    const bombs = await d.api<JobView>('POST', '/api/v1/jobs', {
      name: 'bombs',
      command: 'true',
      tasks: [{}, {}],
      maxAttempts: 1,
      speculative: false,
    });
    const big = await d.api<JobView>('POST', '/api/v1/jobs', {
      name: 'big-outputs',
      command: 'true',
      tasks: Array.from({ length: BIG_TASKS }, () => ({})),
      speculative: false,
    });
    await waitFor('all attack tasks handed out', () => crafted.messages('tasks').flatMap((m) => m.tasks).length === 2 + BIG_TASKS);
    const held = crafted
      .messages('tasks')
      .flatMap((m) => m.tasks)
      .map((t) => t.taskId)
      .sort((a, b) => a - b);
    expect(held).toEqual([
      ...Array.from({ length: 2 }, (_, i) => bombs.firstTaskId + i),
      ...Array.from({ length: BIG_TASKS }, (_, i) => big.firstTaskId + i),
    ]);

    real = agentFor(d, REAL_MAC);
    const warm = await d.api<JobView>('POST', '/api/v1/jobs', { name: 'warm-up', command: ['sh', '-c', 'echo warm'], tasks: [{}, {}] });
    expect((await finished(warm.id)).counts.done).toBe(2);
    const normal = await d.api<JobView>('POST', '/api/v1/jobs', {
      name: 'normal',
      command: ['sh', '-c', 'sleep 0.3; echo fine-{i}'],
      params: [{ i: '1' }, { i: '2' }, { i: '3' }],
    });

    // Idle: both agents connected, nothing in flight on the crafted side.
    const mib = (kib: number) => `${(kib / 1024).toFixed(0)} MiB`;
    const idle = rssKiB();
    let peak = idle;
    sampler = setInterval(() => (peak = Math.max(peak, rssKiB())), 5);
    const acks = () => crafted.messages('ack').flatMap((a) => a.refs.map((r) => r.taskId));

    // 1. Stale bombs: six results of tasks the crafted agent never held (one of them the real
    //    agent's), each text and outputs tar inflating to 1 GiB from about 1 MiB.
    const gig = bomb(16).toString('base64');
    const staleIds = [normal.firstTaskId, 900_001, 900_002, 900_003, 900_004, 900_005];
    for (const id of staleIds)
      crafted.send({ type: 'results', results: [result(id, { stdout: { gz: gig }, stderr: { gz: gig }, outputsTarGzB64: gig })] });
    await waitFor('six stale results acknowledged', () => staleIds.every((id) => acks().includes(id)), 60_000);
    const peakSix = peak;
    expect(peakSix - idle).toBeLessThan(64 * 1024);
    await waitFor('stale log line', () =>
      d.logs.find(
        (l) => l.msg === 'results of tasks this node does not hold dropped unread' && l.mac === CRAFTED_MAC && l.ip === '127.0.0.1',
      ),
    );

    // 2. A message near the 32 MiB limit whose outputs inflate to 23 GiB. Decoding any message
    //    that size costs memory of its own (frame, plaintext, JSON), so it is compared with a
    //    same-size stale result that is no bomb: the bomb must cost nothing beyond that.
    const maxSize = 23 * MiB;
    peak = rssKiB();
    const plainBefore = peak;
    crafted.send({ type: 'results', results: [result(900_006, { outputsTarGzB64: randomBytes(maxSize).toString('base64') })] });
    await waitFor('plain max-size result acknowledged', () => acks().includes(900_006), 60_000);
    const plainCost = peak - plainBefore;
    peak = rssKiB();
    const bigBefore = peak;
    crafted.send({
      type: 'results',
      results: [result(900_007, { outputsTarGzB64: bomb(Math.floor(maxSize / member.length)).toString('base64') })],
    });
    await waitFor('max-size bomb acknowledged', () => acks().includes(900_007), 60_000);
    const bigCost = peak - bigBefore;
    expect(bigCost).toBeLessThan(plainCost + 64 * 1024);

    // 3. The holder's text bomb: cut at the cap, recorded, the agent told why.
    peak = rssKiB();
    const holderBefore = peak;
    const [textTask, outputsTask] = held;
    crafted.send({ type: 'results', results: [result(textTask!, { stdout: { gz: gig }, stderr: 'plain' })] });
    const [tooLong] = await crafted.waitFor('error', 1, 60_000);
    expect(tooLong).toMatchObject({
      code: 'oversize',
      about: 'results',
      message: expect.stringMatching(
        new RegExp(
          `task ${textTask} attempt 1 stdout: .*more than ${DEFAULT_RESULT_TEXT_MAX_BYTES} bytes \\(the dispatcher's resultTextMaxBytes\\)`,
        ),
      ),
    });
    await waitFor('text bomb acked', () => acks().includes(textTask!), 30_000);

    // 4. The holder's outputs bomb: refused on arrival, the rest of the result kept.
    crafted.send({ type: 'results', results: [result(outputsTask!, { stdout: 'made outputs', outputsTarGzB64: gig })] });
    const [refused] = (await crafted.waitFor('error', 2, 60_000)).slice(1);
    expect(refused).toMatchObject({
      code: 'oversize',
      about: 'results',
      message: expect.stringMatching(
        new RegExp(
          `task ${outputsTask} attempt 1 outputs: the outputs tar inflates to more than ${DEFAULT_OUTPUTS_MAX_INFLATED_BYTES} bytes`,
        ),
      ),
    });
    await waitFor('outputs bomb acked', () => acks().includes(outputsTask!), 30_000);
    await waitFor('refusal log line', () =>
      d.logs.find((l) => l.msg === 'result parts refused' && l.mac === CRAFTED_MAC && l.ip === '127.0.0.1' && l.field === 'outputs'),
    );
    clearInterval(sampler);
    const after = rssKiB();
    console.log(
      `dispatcher RSS: idle ${mib(idle)}; six stale 1 GiB bombs: peak ${mib(peakSix)} (+${mib(peakSix - idle)}); ` +
        `a plain 32 MiB stale message: +${mib(plainCost)} at its peak; a 23 GiB bomb of that size: +${mib(bigCost)}; ` +
        `the holder's text and outputs bombs: +${mib(peak - holderBefore)}; after all: ${mib(after)} (+${mib(after - idle)})`,
    );
    expect(peak - holderBefore).toBeLessThan(64 * 1024);

    // Read back (after the figures: serving an 8 MiB text costs the API, not the bomb).
    const cut = await taskDetail(textTask!);
    expect(cut).toMatchObject({ state: 'done', result: { stdoutTruncated: true, error: null } });
    expect(cut.result!.stdout.length).toBe(DEFAULT_RESULT_TEXT_MAX_BYTES);
    expect(await taskDetail(outputsTask!)).toMatchObject({
      result: {
        stdout: 'made outputs',
        outputsBytes: 0,
        error: expect.stringMatching(/^outputs refused: the outputs tar inflates to more than/),
      },
    });

    // The real agent's job ran through all of it, its results untouched by the forged one.
    const n = await finished(normal.id);
    expect(n.counts.done).toBe(3);
    const lines = (await d.text(`/api/v1/jobs/${normal.id}/results?format=jsonl`))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { result: { stdout: string; mac: string } });
    expect(lines.map((l) => [l.result.stdout, l.result.mac])).toEqual([
      ['fine-1\n', REAL_MAC],
      ['fine-2\n', REAL_MAC],
      ['fine-3\n', REAL_MAC],
    ]);
  }, 180_000);

  it('serves outputs.tar only with the admin token, streaming a big download while the server keeps answering', async () => {
    const big = (await d.api<{ jobs: (JobView & { name: string })[] }>('GET', '/api/v1/jobs')).jobs.find((j) => j.name === 'big-outputs')!;
    const anonymous = await fetch(`${d.url}/api/v1/jobs/${big.id}/outputs.tar`);
    expect(anonymous.status).toBe(401);
    expect(((await anonymous.json()) as { error: { code: string } }).error.code).toBe('DSP_ERR_UNAUTHORIZED');

    // Legitimate outputs within the limits, one result per message (each inflates to 60 MiB).
    const body = Buffer.alloc(BIG_FILE, 'lilcluster output line 0123456789\n');
    const tgz = (await tarGzOf('data.txt', body)).toString('base64');
    const acksBefore = crafted.messages('ack').length;
    for (let i = 0; i < BIG_TASKS; i++) crafted.send({ type: 'results', results: [result(big.firstTaskId + i, { outputsTarGzB64: tgz })] });
    await crafted.waitFor('ack', acksBefore + BIG_TASKS, 60_000);
    expect((await finished(big.id)).counts.done).toBe(BIG_TASKS);

    // Download it (curl | tar, in processes of their own) while this process asks for the job
    // every 10 ms; the dispatcher's own event-loop delay comes from /metrics (reset by a read).
    const loopDelay = async (): Promise<number> =>
      Number(
        /nodejs_eventloop_delay_seconds\{quantile="0.99"\} ([\d.e+-]+)/.exec(await (await fetch(`${d.url}/metrics`)).text())?.[1] ?? NaN,
      ) * 1000;
    await loopDelay();
    let slowest = 0;
    let asked = 0;
    let downloading = true;
    const prober = (async () => {
      while (downloading) {
        const t0 = performance.now();
        await (await fetch(`${d.url}/api/v1/jobs/${big.id}`)).arrayBuffer();
        slowest = Math.max(slowest, performance.now() - t0);
        asked++;
        await new Promise((res) => setTimeout(res, 10));
      }
    })();
    const t0 = performance.now();
    const listing = await new Promise<string>((resolve, reject) => {
      const sh = spawn('sh', ['-c', `curl -sfS -H "authorization: Bearer $TOKEN" "$URL" | tar -tvf -`], {
        env: { ...process.env, TOKEN: token, URL: `${d.url}/api/v1/jobs/${big.id}/outputs.tar` },
      });
      let out = '';
      let err = '';
      sh.stdout.on('data', (c: Buffer) => (out += c.toString()));
      sh.stderr.on('data', (c: Buffer) => (err += c.toString()));
      sh.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`curl | tar exited ${code}: ${err}`))));
    });
    const seconds = (performance.now() - t0) / 1000;
    downloading = false;
    await prober;
    const p99 = await loopDelay();
    console.log(
      `outputs download: ${BIG_TASKS} × ${BIG_FILE / MiB} MiB in ${seconds.toFixed(1)} s; ${asked} concurrent requests, slowest ${slowest.toFixed(0)} ms; dispatcher event-loop delay p99 ${p99.toFixed(1)} ms`,
    );
    const entries = listing
      .trim()
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .map((f) => [f[5], Number(f[2])]);
    expect(entries).toEqual(Array.from({ length: BIG_TASKS }, (_, i) => [`task-${big.firstTaskId + i}/data.txt`, BIG_FILE]));
    expect(asked).toBeGreaterThan(5);
    // Bounds with room for a loaded CI machine; inflating one task's tar in one go (60 MiB)
    // blocks for several hundred milliseconds.
    expect(slowest).toBeLessThan(400);
    expect(p99).toBeLessThan(150);
  }, 180_000);
});
