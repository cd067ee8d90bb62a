/**
 * Attacks on the HTTP API of a real dispatcher process (dist/bin/dispatcher.mjs, loopback,
 * DHCP and TFTP off): a cross-origin page riding the log-in cookie, a malformed cookie, an
 * inspect without a token, a 64 MiB body sent without a token; and the data dir: its modes
 * whatever the umask, and one clear line when it cannot be written.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { spawnDispatcher, startDispatcher, type DispatcherProcess } from '../../lab/dispatcher.js';

interface Answer {
  status: number;
  json: { error?: { code: string; message: string; hint?: string }; state?: string; id?: number } & Record<string, unknown>;
}

function call(d: DispatcherProcess, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port: d.port,
        method,
        path,
        headers: { ...(body !== undefined ? { 'content-length': String(Buffer.byteLength(body)) } : {}), ...headers },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode!, json: text ? JSON.parse(text) : {} }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const rssKiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);

describe('the API under attack', () => {
  let d: DispatcherProcess;
  let cookie: string;
  const bearer = () => ({ authorization: `Bearer ${d.token}` });
  const newJob = async () => {
    const r = await call(
      d,
      'POST',
      '/api/v1/jobs',
      { ...bearer(), 'content-type': 'application/json' },
      JSON.stringify({ command: ['true'] }),
    );
    expect(r.status).toBe(201);
    return r.json.id as number;
  };
  const jobState = async (id: number) => (await call(d, 'GET', `/api/v1/jobs/${id}`)).json.state;

  beforeAll(async () => {
    d = await startDispatcher();
    const login = await fetch(`${d.url}/login?token=${encodeURIComponent(d.token)}`, { redirect: 'manual' });
    cookie = login.headers.get('set-cookie')!.split(';')[0]!;
  }, 30_000);
  afterAll(() => d?.stop());

  it.each([
    ['a text/plain form from another origin', { origin: 'http://evil.example', 'content-type': 'text/plain' }, '{}'],
    ['a body-less POST from another origin', { origin: 'http://evil.example' }, undefined],
    ['another port of the same host', { origin: 'http://127.0.0.1:1' }, undefined],
    ['a browser that says cross-site', { 'sec-fetch-site': 'cross-site', 'content-type': 'text/plain' }, '{}'],
    ['a page whose origin is hidden (null)', { origin: 'null' }, undefined],
    ['no Origin and no Sec-Fetch-Site', {}, undefined],
  ])('refuses a cookie-authenticated cancel from %s (403) and the job is not cancelled', async (_what, headers, body) => {
    const id = await newJob();
    const r = await call(d, 'POST', `/api/v1/jobs/${id}/cancel`, { cookie, ...headers }, body);
    expect(r.status).toBe(403);
    expect(r.json.error).toMatchObject({
      code: 'DSP_ERR_FORBIDDEN',
      message: expect.stringContaining('log-in cookie'),
      hint: expect.stringContaining('Bearer'),
    });
    expect(await jobState(id)).toBe('active');
  });

  it('takes a cookie-authenticated action from the page itself (Origin, or Sec-Fetch-Site: same-origin)', async () => {
    const a = await newJob();
    expect((await call(d, 'POST', `/api/v1/jobs/${a}/cancel`, { cookie, origin: d.url })).status).toBe(200);
    expect(await jobState(a)).toBe('cancelled');
    const b = await newJob();
    expect((await call(d, 'POST', `/api/v1/jobs/${b}/cancel`, { cookie, 'sec-fetch-site': 'same-origin' })).status).toBe(200);
    expect(await jobState(b)).toBe('cancelled');
    // The page's inspect button: POST with the cookie and its origin passes the token check.
    const i = await call(d, 'POST', '/api/v1/nodes/node1/inspect', { cookie, origin: d.url });
    expect(i.json.error?.code).toBe('DSP_ERR_NODE_NOT_FOUND');
  });

  it('takes the bearer token without any Origin', async () => {
    const id = await newJob();
    expect((await call(d, 'POST', `/api/v1/jobs/${id}/cancel`, bearer())).status).toBe(200);
    expect(await jobState(id)).toBe('cancelled');
  });

  it('refuses a text/plain body even with the bearer token (415, naming the expected type)', async () => {
    const id = await newJob();
    const r = await call(d, 'POST', `/api/v1/jobs/${id}/cancel`, { ...bearer(), 'content-type': 'text/plain' }, '{}');
    expect(r.status).toBe(415);
    expect(r.json.error).toMatchObject({ code: 'DSP_ERR_UNSUPPORTED_MEDIA_TYPE', message: expect.stringContaining('application/json') });
    expect(await jobState(id)).toBe('active');
    const form = await call(
      d,
      'POST',
      '/api/v1/jobs',
      { ...bearer(), 'content-type': 'application/x-www-form-urlencoded' },
      'command=true',
    );
    expect(form.status).toBe(415);
  });

  it.each([
    ['bad percent-encoding', 'lc_admin=%E0%A4%A'],
    ['a lone percent sign', 'lc_admin=%'],
    ['garbage', 'lc_admin=\u00ff\u00fe%zz;;=;'],
    ['an empty value', 'lc_admin='],
    ['no value at all', 'lc_admin'],
  ])('treats a malformed cookie (%s) as none: 401, not 500', async (_what, bad) => {
    const id = await newJob();
    const r = await call(d, 'POST', `/api/v1/jobs/${id}/cancel`, { cookie: bad, origin: d.url });
    expect(r.status).toBe(401);
    expect(r.json.error?.code).toBe('DSP_ERR_UNAUTHORIZED');
    expect((await call(d, 'GET', '/api/v1/session', { cookie: bad })).json).toEqual({ admin: false });
    expect(await jobState(id)).toBe('active');
  });

  it('refuses inspect without the token (it makes an agent act)', async () => {
    for (const method of ['GET', 'POST', 'HEAD']) {
      const r = await call(d, method, '/api/v1/nodes/node1/inspect');
      expect(r.status, method).toBe(401);
      if (method !== 'HEAD') expect(r.json.error?.code).toBe('DSP_ERR_UNAUTHORIZED');
    }
    expect((await call(d, 'GET', '/api/v1/nodes/node1/inspect', bearer())).json.error?.code).toBe('DSP_ERR_NODE_NOT_FOUND');
  });

  it('refuses a 64 MiB body without a token before reading it', async () => {
    const total = 64 * 1024 * 1024;
    const rssBefore = rssKiB(d.child.pid!);
    const sock = connect(d.port, '127.0.0.1');
    await new Promise((r) => sock.once('connect', r));
    let answer = '';
    const answered = new Promise<void>((resolve) =>
      sock.on('data', (c: Buffer) => {
        answer += c.toString('latin1');
        if (answer.includes('\r\n\r\n')) resolve();
      }),
    );
    sock.on('error', () => {});
    sock.write(`POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${total}\r\n\r\n`);
    const first = Buffer.alloc(64 * 1024, 0x20);
    sock.write(first);
    // The answer comes while nearly all of the body is still unsent.
    await answered;
    expect(answer).toMatch(/^HTTP\/1\.1 401 /);
    expect(answer).toContain('DSP_ERR_UNAUTHORIZED');
    expect(answer.toLowerCase()).toContain('connection: close');
    // Try to send the rest anyway: the dispatcher has closed the connection instead of reading it.
    const closed = new Promise((r) => sock.once('close', r));
    const chunk = Buffer.alloc(1024 * 1024, 0x20);
    let sent = first.length;
    while (sent < total && !sock.destroyed) {
      const n = Math.min(chunk.length, total - sent);
      const drained = sock.write(chunk.subarray(0, n));
      sent += n;
      if (!drained) await Promise.race([new Promise((r) => sock.once('drain', r)), closed]);
    }
    await closed;
    const grewMiB = (rssKiB(d.child.pid!) - rssBefore) / 1024;
    console.log(
      `64 MiB unauthenticated body: answered 401 after ${first.length} bytes, connection closed after ${(sent / 1048576).toFixed(1)} MiB written by the client; dispatcher RSS grew ${grewMiB.toFixed(1)} MiB`,
    );
    expect(sent).toBeLessThan(total);
    expect(grewMiB).toBeLessThan(16);
    expect((await call(d, 'GET', '/healthz')).status).toBe(200);
  }, 30_000);
});

describe('the data dir', () => {
  /** The dispatcher started under umask 000 by a shell, until it is healthy or exits. */
  async function runUnderUmask0(dataDir: string): Promise<{ code: number | null; stderr: string; stop(): Promise<void> }> {
    const d = spawnDispatcher({ dataDir, prefix: ['/bin/sh', '-c', 'umask 000; exec "$@"', 'sh'] });
    const started = await d.started().then(
      () => true,
      (err: Error) => {
        if (d.child.exitCode === null) throw err;
        return false;
      },
    );
    const code = started ? null : (await d.exited).code;
    return { code, stderr: d.stderr(), stop: () => d.stop() };
  }
  const mode = (p: string) => (statSync(p).mode & 0o777).toString(8);

  it('is made 0700, with the database, its WAL and the secrets 0600, under umask 000', async () => {
    const dataDir = join(mkdtempSync(join(tmpdir(), 'lc-modes-')), 'data');
    const run = await runUnderUmask0(dataDir);
    try {
      expect(run.code, run.stderr).toBeNull();
      expect(mode(dataDir)).toBe('700');
      for (const f of ['dispatcher.db', 'dispatcher.db-wal', 'dispatcher.db-shm', 'admin.token', 'enroll.token', 'identity.key'])
        expect(mode(join(dataDir, f)), f).toBe('600');
    } finally {
      await run.stop();
    }
  }, 30_000);

  it('narrows a world-readable database and token left by an older version', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'lc-modes-'));
    writeFileSync(join(dataDir, 'dispatcher.db'), '', { mode: 0o644 });
    writeFileSync(join(dataDir, 'admin.token'), 'an-old-admin-token-of-enough-length\n', { mode: 0o644 });
    const run = await runUnderUmask0(dataDir);
    try {
      expect(run.code, run.stderr).toBeNull();
      expect(mode(join(dataDir, 'dispatcher.db'))).toBe('600');
      expect(mode(join(dataDir, 'admin.token'))).toBe('600');
    } finally {
      await run.stop();
    }
  }, 30_000);

  it('that is read-only stops the dispatcher with one line and a hint (exit 2), no stack', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'lc-ro-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', dataDir]);
    try {
      const run = await runUnderUmask0(dataDir);
      expect(run.code).toBe(2);
      const lines = run.stderr.trim().split('\n');
      expect(lines[0]).toBe(`dispatcher: cannot use the data dir ${dataDir}: it is on a read-only file system (EROFS)`);
      expect(lines[1]).toMatch(/^ {2}hint: .*writable.*--data-dir/);
      expect(run.stderr).not.toMatch(/^\s+at /m);
      expect(run.stderr).not.toContain('SqliteError');
    } finally {
      execFileSync('umount', [dataDir]);
    }
  }, 30_000);

  it('that is a file stops the dispatcher with one line and a hint (exit 2)', async () => {
    const parent = mkdtempSync(join(tmpdir(), 'lc-ro-'));
    mkdirSync(join(parent, 'x'));
    writeFileSync(join(parent, 'x', 'data'), 'not a directory');
    const run = await runUnderUmask0(join(parent, 'x', 'data'));
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/^dispatcher: cannot use the data dir .*x\/data: /);
    expect(run.stderr).not.toMatch(/^\s+at /m);
  }, 30_000);
});
