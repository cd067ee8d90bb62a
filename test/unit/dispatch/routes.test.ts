import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import type { FastifyInstance } from 'fastify';
import { createCore, closeCore, type Core } from '../../../dispatcher/src/core.js';
import { resolveConfig } from '../../../dispatcher/src/config.js';
import { silentLogger } from '../../../dispatcher/src/log.js';
import { buildApp } from '../../../dispatcher/src/http/app.js';
import { startDispatch, type DispatchService } from '../../../dispatcher/src/dispatch/service.js';
import { SWEEP_CONTENT_TYPE } from '../../../dispatcher/src/api/jobs/schemas.js';
import { node, okResult, tempDir } from './helpers.js';

let core: Core;
let dispatch: DispatchService;
let app: FastifyInstance;
let auth: Record<string, string>;

beforeAll(async () => {
  const dir = tempDir('lc-dispatch-api-');
  core = createCore({
    config: resolveConfig({ dataDir: dir, dhcp: { mode: 'off' }, tftp: false, outputsMaxInflatedBytes: 1 << 20 }),
    log: silentLogger(),
    network: { name: undefined, ifindex: undefined, address: '127.0.0.1', netmask: '255.0.0.0', mac: undefined },
  });
  dispatch = startDispatch(core);
  app = await buildApp(core, dispatch.plugins);
  auth = { authorization: `Bearer ${core.secrets.adminToken}` };
});

afterAll(async () => {
  dispatch.stop();
  await app.close();
  closeCore(core);
});

async function tarOf(files: Record<string, string>): Promise<Buffer> {
  const pack = tar.pack();
  for (const [name, body] of Object.entries(files)) pack.entry({ name }, body);
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function untar(buf: Buffer): Promise<Record<string, string>> {
  const ex = tar.extract();
  const out: Record<string, string> = {};
  const done = (async () => {
    for await (const e of ex) {
      const chunks: Buffer[] = [];
      for await (const c of e) chunks.push(c as Buffer);
      out[e.header.name] = Buffer.concat(chunks).toString();
    }
  })();
  ex.end(buf);
  await done;
  return out;
}

describe('job API', () => {
  it('refuses a submission without the admin token', async () => {
    const r = await app.inject({ method: 'POST', url: '/api/v1/jobs', payload: { command: ['true'] } });
    expect(r.statusCode).toBe(401);
    expect(r.json().error.code).toBe('DSP_ERR_UNAUTHORIZED');
  });

  it('refuses a malformed submission with a message naming the field, unknown fields included', async () => {
    const r = await app.inject({ method: 'POST', url: '/api/v1/jobs', headers: auth, payload: { command: ['true'], timeoutSecs: 5 } });
    expect(r.statusCode).toBe(400);
    expect(r.json().error).toMatchObject({ code: 'DSP_ERR_BAD_SUBMISSION', message: 'timeoutSecs: unknown field' });
    const r2 = await app.inject({ method: 'POST', url: '/api/v1/jobs', headers: auth, payload: { command: ['true'], timeoutSeconds: -3 } });
    expect(r2.json().error.message).toMatch(/^timeoutSeconds: /);
  });

  it('submits, lists, shows and exports a sweep streamed as CSV', async () => {
    const body = JSON.stringify({ name: 'sweep', command: ['echo', '{x}'] }) + '\nx,label\n1,one\n2,"two, too"\n';
    const r = await app.inject({
      method: 'POST',
      url: '/api/v1/jobs?format=csv',
      headers: { ...auth, 'content-type': SWEEP_CONTENT_TYPE },
      payload: body,
    });
    expect(r.statusCode).toBe(201);
    const job = r.json();
    expect(job).toMatchObject({ name: 'sweep', state: 'active', columns: ['x', 'label'], counts: { total: 2, queued: 2 } });

    const tasks = dispatch.engine.takeTasks(node(1), 2);
    await dispatch.engine.submitResults(node(1), [
      okResult(tasks[0]!, { stdout: 'line1\nline2' }),
      okResult(tasks[1]!, { exitCode: 1, stderr: 'bad "thing"' }),
    ]);

    expect((await app.inject({ url: '/api/v1/jobs' })).json().jobs[0]).toMatchObject({
      id: job.id,
      state: 'done',
      counts: { done: 1, failed: 1 },
    });
    expect((await app.inject({ url: `/api/v1/jobs/${job.id}` })).json().counts).toMatchObject({ done: 1, failed: 1 });
    const page = (await app.inject({ url: `/api/v1/jobs/${job.id}/tasks?state=failed` })).json();
    expect(page).toMatchObject({
      tasks: [{ id: tasks[1]!.taskId, state: 'failed', exitCode: 1, params: { x: '2', label: 'two, too' } }],
      nextAfterId: null,
    });
    // A task's environment and output, and the results export, need the admin token.
    expect((await app.inject({ url: `/api/v1/tasks/${tasks[0]!.taskId}` })).statusCode).toBe(401);
    expect((await app.inject({ url: `/api/v1/jobs/${job.id}/results` })).statusCode).toBe(401);
    const detail = (await app.inject({ url: `/api/v1/tasks/${tasks[0]!.taskId}`, headers: auth })).json();
    expect(detail).toMatchObject({ command: ['echo', '1'], state: 'done', result: { stdout: 'line1\nline2', exitCode: 0 } });

    const csv = await app.inject({ url: `/api/v1/jobs/${job.id}/results?format=csv`, headers: auth });
    expect(csv.headers['content-type']).toMatch(/^text\/csv/);
    const csvLines = csv.body.split('\n');
    expect(csvLines[0]).toBe(
      'task_id,index,x,label,state,exit_code,signal,timed_out,error,attempt,node,started_at,duration_ms,max_rss_kib,outputs_bytes,stdout_truncated,stderr_truncated,stdout,stderr',
    );
    expect(csv.body).toContain(`${tasks[1]!.taskId},1,2,"two, too",failed,1,,0,,1,`);
    expect(csv.body).toContain('"bad ""thing"""');
    expect(csv.body).toContain('"line1\nline2"');
    const jsonl = (await app.inject({ url: `/api/v1/jobs/${job.id}/results?format=jsonl`, headers: auth })).body
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(jsonl).toHaveLength(2);
    expect(jsonl[1]).toMatchObject({ index: 1, state: 'failed', params: { x: '2' }, result: { exitCode: 1, stderr: 'bad "thing"' } });
  });

  it('names the line of a params file with a missing column and queues nothing', async () => {
    const before = (await app.inject({ url: '/api/v1/jobs' })).json().jobs.length;
    const body = JSON.stringify({ command: ['e', '{x}', '{y}'] }) + '\nx\n1\n';
    const r = await app.inject({
      method: 'POST',
      url: '/api/v1/jobs?format=csv',
      headers: { ...auth, 'content-type': SWEEP_CONTENT_TYPE },
      payload: body,
    });
    expect(r.statusCode).toBe(400);
    expect(r.json().error.message).toMatch(/^params line 1, column "y": missing column "y"/);
    expect((await app.inject({ url: '/api/v1/jobs' })).json().jobs.length).toBe(before);
  });

  it('serves inputs to agents by the key in inputsPath, and returns outputs as one tar with safe names', async () => {
    const inputs = await tarOf({ 'data.txt': 'hello' });
    const up = await app.inject({
      method: 'POST',
      url: '/api/v1/blobs',
      headers: { ...auth, 'content-type': 'application/x-tar' },
      payload: inputs,
    });
    expect(up.statusCode).toBe(201);
    const { id } = up.json();
    const r = await app.inject({
      method: 'POST',
      url: '/api/v1/jobs',
      headers: auth,
      payload: { command: 'cat data.txt > out/copy', inputs: id },
    });
    expect(r.statusCode).toBe(201);
    const [t] = dispatch.engine.takeTasks(node(2), 1);
    expect(t!.inputsPath).toMatch(/^\/api\/v1\/jobs\/\d+\/inputs\.tar\?key=/);
    const got = await app.inject({ url: t!.inputsPath! });
    expect(got.statusCode).toBe(200);
    expect(Buffer.compare(got.rawPayload, inputs)).toBe(0);
    expect((await app.inject({ url: t!.inputsPath!.replace(/key=.*/, 'key=wrong') })).statusCode).toBe(404);
    expect((await app.inject({ url: t!.inputsPath!.replace(/\?key=.*/, '') })).statusCode).toBe(401);

    const outputs = gzipSync(await tarOf({ copy: 'hello', '../../etc/evil': 'no', 'sub/deep.txt': 'deep' }));
    await dispatch.engine.submitResults(node(2), [okResult(t!, { outputsTarGzB64: outputs.toString('base64') })]);
    const anonymous = await app.inject({ url: `/api/v1/jobs/${r.json().id}/outputs.tar` });
    expect([anonymous.statusCode, anonymous.json().error.code]).toEqual([401, 'DSP_ERR_UNAUTHORIZED']);
    const tarAnswer = await app.inject({ url: `/api/v1/jobs/${r.json().id}/outputs.tar`, headers: auth });
    expect(tarAnswer.headers['content-type']).toBe('application/x-tar');
    expect(await untar(tarAnswer.rawPayload)).toEqual({ [`task-${t!.taskId}/copy`]: 'hello', [`task-${t!.taskId}/sub/deep.txt`]: 'deep' });
  });

  it('serves outputs that inflate past the cap as a valid tar: what fits, then a note naming the cap', async () => {
    const r = await app.inject({ method: 'POST', url: '/api/v1/jobs', headers: auth, payload: { command: 'x', tasks: [{}, {}] } });
    const [a, b] = dispatch.engine.takeTasks(node(2), 2);
    // Stored as they came (before outputs were checked on arrival): one file past the cap
    // half-way, one whose header alone claims more than the cap.
    const cut = gzipSync(await tarOf({ 'first.txt': 'x'.repeat(600_000), 'second.bin': 'y'.repeat(600_000) }));
    const huge = gzipSync(await tarOf({ 'small.txt': 'ok', 'huge.bin': '\0'.repeat(3 << 20) }));
    await dispatch.engine.submitResults(node(2), [
      okResult(a!, { outputsTarGzB64: cut.toString('base64') }),
      okResult(b!, { outputsTarGzB64: huge.toString('base64') }),
    ]);
    const got = await untar((await app.inject({ url: `/api/v1/jobs/${r.json().id}/outputs.tar`, headers: auth })).rawPayload);
    expect(Object.keys(got).sort()).toEqual([
      `task-${a!.taskId}/.outputs-error.txt`,
      `task-${a!.taskId}/first.txt`,
      `task-${a!.taskId}/second.bin`,
      `task-${b!.taskId}/.outputs-error.txt`,
      `task-${b!.taskId}/small.txt`,
    ]);
    expect(got[`task-${a!.taskId}/first.txt`]).toBe('x'.repeat(600_000));
    expect(got[`task-${a!.taskId}/second.bin`]!.length).toBe(600_000);
    expect(got[`task-${a!.taskId}/.outputs-error.txt`]).toMatch(/the outputs tar inflates to more than 1048576 bytes/);
    expect(got[`task-${b!.taskId}/.outputs-error.txt`]).toMatch(/inflates to more than 1048576 bytes/);
  });

  it('cancels jobs and tasks with the admin token only', async () => {
    const r = await app.inject({ method: 'POST', url: '/api/v1/jobs', headers: auth, payload: { command: ['x'], tasks: [{}, {}] } });
    const job = r.json();
    expect((await app.inject({ method: 'POST', url: `/api/v1/tasks/${job.firstTaskId}/cancel` })).statusCode).toBe(401);
    expect((await app.inject({ method: 'POST', url: `/api/v1/tasks/${job.firstTaskId}/cancel`, headers: auth })).json().state).toBe(
      'cancelled',
    );
    const c = await app.inject({ method: 'POST', url: `/api/v1/jobs/${job.id}/cancel`, headers: auth });
    expect(c.json()).toMatchObject({ state: 'cancelled', counts: { cancelled: 2 } });
  });

  it('answers 404 with a stable code for unknown jobs and tasks', async () => {
    expect((await app.inject({ url: '/api/v1/jobs/9999' })).json().error.code).toBe('DSP_ERR_JOB_NOT_FOUND');
    expect((await app.inject({ url: '/api/v1/tasks/99999', headers: auth })).json().error.code).toBe('DSP_ERR_TASK_NOT_FOUND');
    expect((await app.inject({ url: '/api/v1/jobs/9999/results', headers: auth })).statusCode).toBe(404);
  });

  it('reports the engine counts', async () => {
    const r = (await app.inject({ url: '/api/v1/dispatch' })).json();
    expect(r.stats).toMatchObject({ done: expect.any(Number), queued: expect.any(Number) });
  });
});
