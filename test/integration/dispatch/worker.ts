/**
 * A process that drives the dispatch engine against a data dir, for the kill -9 tests. It
 * prints a line only after the engine said the thing is durable:
 *   SUBMITTED <job> <firstTaskId> <count> <maxAttempts>
 *   TAKE <mac> <task> <attempt>            (handed out; not durable, just what the agent holds)
 *   ACK <mac> <task> <attempt> <final|retry> <outcome>   (submitResults resolved)
 *   KEEP <mac> <task> <attempt>            (re-adopted after a restart)
 *   DONE                                   (resume mode: every task has its result)
 *
 *   LC_TEST_STORE=postgres://…             the PostgreSQL store instead of SQLite in DATA_DIR
 *   node worker.mjs DATA_DIR run            submit jobs and run tasks until killed
 *   node worker.mjs DATA_DIR resume [skip]  re-adopt what the agents held (JSON on stdin:
 *                                           {mac: [{taskId, attempt}]}), finish every task;
 *                                           agents listed in `skip` (comma-separated) stay away
 */
import { Readable } from 'node:stream';
import { openStore } from '../../../dispatcher/src/store/database.js';
import { parseStoreUrl } from '../../../dispatcher/src/store/postgres/connection.js';
import { takeLead } from '../../../dispatcher/src/store/postgres/shared-store.js';
import { GroupCommit } from '../../../dispatcher/src/store/group-commit.js';
import { allMigrations } from '../../../dispatcher/src/store/migrations.js';
import { EventLog } from '../../../dispatcher/src/events/event-log.js';
import { silentLogger } from '../../../dispatcher/src/log.js';
import { TaskDispatcher } from '../../../dispatcher/src/dispatch/engine.js';
import type { NodeCapacity, RunningTaskRef } from '../../../dispatcher/src/dispatch/contract.js';
import type { TaskAssignment, TaskResult } from '../../../dispatcher/src/protocol/messages.js';
import type { Mac } from '../../../dispatcher/src/nodes/mac.js';

const [dir, mode = 'run', skipArg = ''] = process.argv.slice(2);
if (!dir) throw new Error('usage: worker DATA_DIR run|resume');
const AGENTS = 12;
const SLOW_AGENT = 'm5';
const say = (line: string) => process.stdout.write(line + '\n');

const storeUrl = process.env.LC_TEST_STORE;
const shared = storeUrl
  ? await takeLead({
      store: parseStoreUrl(storeUrl),
      self: { url: `worker ${process.pid}` },
      migrations: allMigrations,
      dataDir: dir,
      log: silentLogger(),
      onLeadershipLost: () => process.exit(75),
    })
  : undefined;
const db = shared?.db ?? openStore({ dataDir: dir, migrations: allMigrations });
const commits = shared ? new GroupCommit(db, undefined, shared.durability) : new GroupCommit(db);
const events = new EventLog(db, commits);
const engine = new TaskDispatcher({
  config: { dataDir: dir, leaseGraceSeconds: 1, speculativeK: 2 },
  log: silentLogger(),
  db,
  commits,
  events,
});

const nodes: NodeCapacity[] = Array.from({ length: AGENTS }, (_, i) => ({
  mac: `52:54:00:aa:00:${i.toString(16).padStart(2, '0')}` as Mac,
  name: `m${i}`,
  labels: [],
  cores: 2,
  memoryMiB: 1024,
}));

// Deterministic per task, so a re-run gives the same answer: 10% exit 1, 10% time out once.
function resultFor(a: TaskAssignment): TaskResult {
  const h = (a.taskId * 2654435761) % 100;
  const timedOut = h < 10 && a.attempt === 1;
  return {
    taskId: a.taskId,
    attempt: a.attempt,
    exitCode: timedOut ? null : h < 20 ? 1 : 0,
    signal: timedOut ? 'SIGKILL' : null,
    timedOut,
    error: null,
    startedAt: Date.now(),
    durationMs: 1,
    maxRssKiB: 100,
    stdout: `task ${a.taskId} attempt ${a.attempt}`,
    stderr: '',
    stdoutTruncated: false,
    stderrTruncated: false,
    outputsTarGzB64: null,
  };
}

async function agent(node: NodeCapacity, held: RunningTaskRef[], stopWhenIdle: boolean): Promise<void> {
  if (held.length) {
    const r = engine.readopt(node, held);
    for (const k of r.keep) say(`KEEP ${node.mac} ${k.taskId} ${k.attempt}`);
    const results = r.keep.map((k) => resultFor({ taskId: k.taskId, attempt: k.attempt } as TaskAssignment));
    if (results.length) await deliver(node, results);
  }
  for (;;) {
    const tasks = engine.takeTasks(node, 2);
    for (const t of tasks) say(`TAKE ${node.mac} ${t.taskId} ${t.attempt}`);
    if (tasks.length === 0) {
      if (stopWhenIdle) {
        const s = engine.stats();
        if (!s.recovering && s.queued + s.running === 0) return;
      }
      await new Promise((r) => setTimeout(r, 5));
      continue;
    }
    // m5 holds its tasks 300 ms, so that at a kill some hand-outs are surely in the store
    // (those of the last few milliseconds may not be, and are then handed out again).
    await new Promise((r) => setTimeout(r, node.name === SLOW_AGENT ? 300 : Math.random() * 4));
    await deliver(node, tasks.map(resultFor));
  }
}

async function deliver(node: NodeCapacity, results: TaskResult[]): Promise<void> {
  const outcomes = await engine.submitResults(node, results);
  results.forEach((r, i) => say(`ACK ${node.mac} ${r.taskId} ${r.attempt} ${r.timedOut ? 'retry' : 'final'} ${outcomes[i]}`));
}

async function submitter(): Promise<void> {
  for (let n = 0; ; n++) {
    let job;
    if (n % 2 === 0) {
      const rows = 500 + Math.floor(Math.random() * 3000);
      const text = 'i\n' + Array.from({ length: rows }, (_, i) => `${i}\n`).join('');
      job = await engine.submitJobStream(
        { command: ['work', '{i}'], timeoutSeconds: 2, maxAttempts: 3 },
        'csv',
        Readable.from([text.slice(0, 1000), text.slice(1000)]),
      );
    } else {
      job = await engine.submitJob({
        command: ['work'],
        timeoutSeconds: 2,
        maxAttempts: 2,
        priority: n % 3,
        tasks: Array.from({ length: 50 }, () => ({})),
      });
    }
    say(`SUBMITTED ${job.id} ${job.firstTaskId} ${job.counts.total} ${job.maxAttempts}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

if (mode === 'run') {
  void submitter();
  await Promise.all(nodes.map((n) => agent(n, [], false)));
} else {
  const input = await new Promise<string>((resolve) => {
    let s = '';
    process.stdin
      .setEncoding('utf8')
      .on('data', (d) => (s += d))
      .on('end', () => resolve(s));
  });
  const held = (input.trim() ? JSON.parse(input) : {}) as Record<string, RunningTaskRef[]>;
  const skip = new Set(skipArg.split(',').filter(Boolean));
  await engine.ready;
  await Promise.all(nodes.filter((n) => !skip.has(n.name)).map((n) => agent(n, held[n.mac] ?? [], true)));
  engine.stop();
  await commits.drain();
  say('DONE');
  commits.close();
  db.close();
  await shared?.close();
}
