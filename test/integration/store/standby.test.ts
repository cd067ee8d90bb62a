/**
 * Dispatchers on one PostgreSQL (real processes, a throwaway server): the standby says who
 * leads and refuses the rest; on kill -9 of the leader it takes over with the state and an
 * agent that knows both moves to it; two started at once give one leader; a leader that loses
 * the database refuses changes and loses nothing; and the bad inputs of a connection string
 * or a database are refused at start, in one line, without the password.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ctlAdmin } from '../../lab/run-ctl.js';
import { startPostgres, type Postgres } from '../../lab/postgres.js';
import { spawnDispatcher, startDispatcher, resultsOf, type DispatcherProcess, type JobView } from '../../lab/dispatcher.js';
import { freePort } from '../../lab/ports.js';
import { agentFor, type AgentProcess } from '../agents/harness.js';
import { readSnapshot } from '../../../dispatcher/src/store/postgres/shared-store.js';
import { parseStoreUrl } from '../../../dispatcher/src/store/postgres/connection.js';
import { allMigrations } from '../../../dispatcher/src/store/migrations.js';

/** Polls an async probe until it gives a value. */
async function waitUntil<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number, everyMs: number): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

let pg: Postgres;
const running: (DispatcherProcess | AgentProcess)[] = [];

beforeAll(async () => {
  pg = await startPostgres();
}, 60_000);

afterAll(async () => {
  for (const p of running.reverse()) await ('kill' in p ? p.kill() : p.stop()).catch(() => {});
  await pg?.destroy();
});

/** A database of its own on the test's server (each test starts from an empty store). */
function database(name: string): string {
  pg.psql(`CREATE DATABASE ${name}`);
  return pg.url.replace(/\/[^/]+$/, `/${name}`);
}

async function leaderOf(
  url: string,
): Promise<{ role: string; leader: { url: string | null; epoch: number } | null; storeAvailable?: boolean }> {
  const res = await fetch(`${url}/api/v1/leader`);
  return (await res.json()) as never;
}

/** Two free ports, not the same one twice (the kernel may hand a just-freed port out again). */
async function twoPorts(): Promise<[number, number]> {
  const first = await freePort();
  for (;;) {
    const second = await freePort();
    if (second !== first) return [first, second];
  }
}

function track<T extends DispatcherProcess | AgentProcess>(p: T): T {
  running.push(p);
  return p;
}

async function jobDone(d: DispatcherProcess, id: number): Promise<JobView> {
  try {
    return await waitUntil(
      `job ${id} done on ${d.url}`,
      async () => {
        const j = await d.api<JobView>('GET', `/api/v1/jobs/${id}`);
        return j.state === 'done' ? j : undefined;
      },
      60_000,
      200,
    );
  } catch (err) {
    const job = await d.api('GET', `/api/v1/jobs/${id}`).catch(String);
    const nodes = await d.api('GET', '/api/v1/nodes').catch(String);
    throw new Error(`${(err as Error).message}: job ${JSON.stringify(job)}; nodes ${JSON.stringify(nodes).slice(0, 1500)}`);
  }
}

describe('standby dispatchers on one PostgreSQL', () => {
  it('a standby names the leader and refuses the rest; on kill -9 it takes over with the state, and the agent follows', async () => {
    const store = database('takeover');
    const [aPort, bPort] = await twoPorts();
    const a = track(await startDispatcher({ port: aPort, args: ['--store', store] }));
    const b = track(spawnDispatcher({ port: bPort, args: ['--store', store] }));
    await b.waitForLog((l) => l.msg === 'standby' && l.leader === a.url);
    const bUrl = `http://127.0.0.1:${bPort}`;

    const view = await leaderOf(bUrl);
    expect(view).toMatchObject({ role: 'standby', leader: { url: a.url } });
    expect(await leaderOf(a.url)).toMatchObject({ role: 'leader', store: 'postgres', storeAvailable: true });
    const refused = await fetch(`${bUrl}/api/v1/nodes`);
    expect(refused.status).toBe(503);
    expect(await refused.json()).toMatchObject({ error: { code: 'DSP_ERR_STANDBY' }, leader: a.url });
    expect(await (await fetch(`${bUrl}/`)).text()).toContain('standby');

    // An agent that knows both dispatchers, and a job run to the end on the leader.
    const agent = track(agentFor(a, '52:54:00:5b:00:01', ['--dispatcher', `${a.url},${bUrl}`, '--slots', '4']));
    const job = await a.api<{ id: number }>('POST', '/api/v1/jobs', {
      command: ['true'],
      tasks: Array.from({ length: 40 }, (_, i) => ({ command: ['echo', `task ${i}`] })),
    });
    await jobDone(a, job.id);
    const before = await resultsOf(a, job.id);
    expect(before.filter((r) => r.state === 'done')).toHaveLength(40);
    // A job with inputs (its tar uploaded to the leader, which keeps it in PostgreSQL too).
    const inputs = mkdtempSync(join(tmpdir(), 'lc-standby-inputs-'));
    writeFileSync(join(inputs, 'data.txt'), 'inputs that outlive their leader\n');
    const submitted = await ctlAdmin(a, ['submit', '--json', '--inputs', inputs, '--', 'cat', 'data.txt']);
    expect(submitted.code, submitted.stderr).toBe(0);
    const withInputs = (JSON.parse(submitted.stdout) as { id: number }).id;
    await jobDone(a, withInputs);
    // An inputs tar uploaded to the leader and named by a job only after the takeover.
    writeFileSync(join(inputs, 'late.txt'), 'uploaded before the failover\n');
    const upload = await fetch(`${a.url}/api/v1/blobs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${a.token}`, 'content-type': 'application/x-tar' },
      body: execFileSync('tar', ['-cf', '-', '-C', inputs, 'late.txt']),
    });
    expect(upload.status).toBe(201);
    const lateInputs = ((await upload.json()) as { id: string }).id;
    const epoch = (await leaderOf(a.url)).leader!.epoch;

    const killedAt = Date.now();
    a.child.kill('SIGKILL');
    await b.started();
    const tookOverMs = Date.now() - killedAt;
    expect(tookOverMs).toBeLessThan(10_000);
    expect(await leaderOf(bUrl)).toMatchObject({ role: 'leader', leader: { epoch: epoch + 1 } });
    // The same job, the same results, once each.
    const after = await resultsOf(b, job.id);
    expect(after.map((r) => [r.taskId, r.state, r.result?.stdout])).toEqual(before.map((r) => [r.taskId, r.state, r.result?.stdout]));
    // The inputs, from PostgreSQL (the new leader's data dir never had them).
    expect(await b.text(`/api/v1/jobs/${withInputs}/inputs.tar`)).toContain('inputs that outlive their leader');
    // The agent comes to the new leader, which runs a new job on it.
    await waitUntil(
      'the agent on the new leader',
      async () => (await b.api<{ nodes: { state: string }[] }>('GET', '/api/v1/nodes')).nodes.some((n) => n.state === 'online'),
      30_000,
      200,
    );
    const second = await b.api<{ id: number }>('POST', '/api/v1/jobs', {
      command: ['cat', 'late.txt'],
      inputs: lateInputs,
      tasks: Array.from({ length: 10 }, () => ({})),
    });
    expect(
      (
        await jobDone(b, second.id).catch((err) => {
          throw new Error(
            `${err}\nB errors:\n${b.logs
              .filter((l) => Number(l.level) >= 50)
              .map((l) => JSON.stringify(l))
              .join('\n')
              .slice(0, 3000)}`,
          );
        })
      ).counts.done,
    ).toBe(10);
    expect((await resultsOf(b, second.id)).map((r) => r.result?.stdout)).toEqual(Array(10).fill('uploaded before the failover\n'));
    process.stdout.write(`kill -9 of the leader → the standby serving: ${tookOverMs} ms\n`);
    await agent.kill();
    await b.stop();
  }, 120_000);

  it('two dispatchers started at once on one database: exactly one leads', async () => {
    const store = database('twoatonce');
    const [p1, p2] = await twoPorts();
    const c = track(spawnDispatcher({ port: p1, args: ['--store', store] }));
    const d = track(spawnDispatcher({ port: p2, args: ['--store', store] }));
    const roles = async () => [
      await leaderOf(`http://127.0.0.1:${p1}`).catch(() => undefined),
      await leaderOf(`http://127.0.0.1:${p2}`).catch(() => undefined),
    ];
    const both = await waitUntil(
      'one leader and one standby',
      async () => {
        const r = await roles();
        return r.every((x) => x !== undefined) && r.some((x) => x!.role === 'leader') ? r : undefined;
      },
      45_000,
      200,
    ).catch((err) => {
      throw new Error(`${(err as Error).message}\nfirst:\n${c.output().slice(-2000)}\nsecond:\n${d.output().slice(-2000)}`);
    });
    expect(both.map((x) => x!.role).sort()).toEqual(['leader', 'standby']);
    // A while later, still one; and the standby follows the leader over one session of its
    // own, the same one throughout (not a new connection each time it looks).
    const standbySessions = () =>
      pg
        .psql(
          "SELECT pid || ' ' || backend_start FROM pg_stat_activity WHERE datname = 'twoatonce' AND application_name = 'lilcluster dispatcher (standby)'",
        )
        .trim();
    const first = await waitUntil('the standby session', async () => standbySessions() || undefined, 10_000, 100);
    await new Promise((r) => setTimeout(r, 3000));
    expect((await roles()).map((x) => x!.role).sort()).toEqual(['leader', 'standby']);
    expect(first.split('\n')).toHaveLength(1);
    expect(standbySessions()).toBe(first);
    await c.stop();
    await d.stop();
  }, 60_000);

  it('a leader that loses the database refuses changes, keeps what it acknowledged, and goes on when it returns', async () => {
    const store = database('dbloss');
    const a = track(await startDispatcher({ args: ['--store', store] }));
    const agent = track(agentFor(a, '52:54:00:5b:00:02', ['--slots', '2']));
    const job = await a.api<{ id: number }>('POST', '/api/v1/jobs', {
      command: ['sleep', '0.2'],
      tasks: Array.from({ length: 30 }, () => ({})),
    });
    await waitUntil(
      'some results',
      async () => ((await a.api<JobView>('GET', `/api/v1/jobs/${job.id}`)).counts.done >= 3 ? true : undefined),
      30_000,
      100,
    );

    await pg.stop();
    await waitUntil(
      'the leader sees the database gone',
      async () => ((await leaderOf(a.url)).storeAvailable === false ? true : undefined),
      15_000,
      100,
    );
    const refused = await fetch(`${a.url}/api/v1/jobs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${a.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ command: ['true'] }),
    });
    expect(refused.status).toBe(503);
    expect(await refused.json()).toMatchObject({ error: { code: 'DSP_ERR_STORE_UNAVAILABLE' } });
    expect(await a.text('/metrics')).toMatch(/^lilcluster_store_postgres_available 0$/m);
    // Reads still answer from memory.
    expect((await a.api<JobView>('GET', `/api/v1/jobs/${job.id}`)).id).toBe(job.id);
    await new Promise((r) => setTimeout(r, 2000)); // tasks go on finishing meanwhile

    await pg.start();
    await waitUntil(
      'the leader back on the database',
      async () => ((await leaderOf(a.url)).storeAvailable === true ? true : undefined),
      30_000,
      200,
    );
    const done = await jobDone(a, job.id);
    expect(done.counts.done).toBe(30);
    const metrics = await a.text('/metrics');
    expect(metrics).toMatch(/^lilcluster_store_postgres_available 1$/m);
    expect(metrics).toMatch(/^lilcluster_store_postgres_failures_total [1-9]/m);
    // What PostgreSQL holds: every task once, as a standby would load it.
    const results = await resultsOf(a, job.id);
    expect(new Set(results.map((r) => r.taskId)).size).toBe(30);
    const snapshot = await readSnapshot(parseStoreUrl(store), allMigrations);
    try {
      expect(
        snapshot
          .prepare('SELECT count(*) FROM results WHERE task_id BETWEEN ? AND ?')
          .pluck()
          .get(done.firstTaskId, done.firstTaskId + 29),
      ).toBe(30);
    } finally {
      snapshot.close();
    }
    await agent.kill();
    await a.stop();
  }, 120_000);
});

describe('bad input: the store refused at start', () => {
  async function refusal(store: string): Promise<string> {
    const d = spawnDispatcher({ args: ['--store', store] });
    const { code } = await d.exited;
    expect(code).toBe(2);
    return d.stderr();
  }

  it('a connection string that is not PostgreSQL, or not a URL', async () => {
    expect(await refusal('mysql://u:secretpw@127.0.0.1/x')).toMatch(
      /--store mysql:\/\/u:\*\*\*@127\.0\.0\.1\/x: the scheme must be postgres/,
    );
    expect(await refusal('not a url with secretpw')).toMatch(/is not a URL/);
    expect(await refusal(pg.url.replace(/\/[^/]+$/, '/'))).toMatch(/no database name/);
  });

  it('a wrong password or a missing database, without the password in the message', async () => {
    const wrong = pg.url.replace(/:([^:@/]+)@/, ':wrongpassword@');
    const out = await refusal(wrong);
    expect(out).toMatch(/the password was refused/);
    expect(out).not.toContain('wrongpassword');
    expect(await refusal(pg.url.replace(/\/[^/]+$/, '/nosuchdb'))).toMatch(/the database does not exist/);
    expect(await refusal(`postgres://postgres:x@127.0.0.1:${await freePort()}/db`)).toMatch(/nothing listens there/);
  });

  it('a database of a newer schema version, or one that is not lilcluster’s', async () => {
    const newer = database('newer');
    const a = await startDispatcher({ args: ['--store', newer] });
    await a.stop();
    pg.psql("INSERT INTO schema_migrations (name, applied_at) VALUES ('zz/999-from-the-future', 0)", 'newer');
    const out = await refusal(newer);
    expect(out).toMatch(/schema version \d+ \(it has zz\/999-from-the-future\), written by a newer dispatcher; this one knows version \d+/);

    const foreign = database('notours');
    pg.psql('CREATE TABLE jobs (id int)', 'notours');
    expect(await refusal(foreign)).toMatch(/has tables that are not lilcluster's \(jobs\)/);
  });
});
