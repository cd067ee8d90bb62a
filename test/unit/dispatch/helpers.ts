/** Shared set-up for the dispatch engine's tests: a store in a temp dir (or memory), an engine, a fake agent. */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore, type Db } from '../../../dispatcher/src/store/database.js';
import { GroupCommit } from '../../../dispatcher/src/store/group-commit.js';
import { allMigrations } from '../../../dispatcher/src/store/migrations.js';
import { EventLog } from '../../../dispatcher/src/events/event-log.js';
import { MetricsRegistry } from '../../../dispatcher/src/metrics/registry.js';
import { silentLogger } from '../../../dispatcher/src/log.js';
import { TaskDispatcher, type EngineOptions } from '../../../dispatcher/src/dispatch/engine.js';
import type { NodeCapacity } from '../../../dispatcher/src/dispatch/contract.js';
import type { TaskAssignment, TaskResult } from '../../../dispatcher/src/protocol/messages.js';
import type { Mac } from '../../../dispatcher/src/nodes/mac.js';

export interface Harness {
  dir: string;
  db: Db;
  commits: GroupCommit;
  events: EventLog;
  metrics: MetricsRegistry;
  engine: TaskDispatcher;
  clock: { t: number };
  close(): void;
}

export function tempDir(prefix = 'lc-dispatch-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function openEngine(
  dir: string = tempDir(),
  opts: EngineOptions & { clock?: { t: number }; leaseGraceSeconds?: number; speculativeK?: number } = {},
): Harness {
  const db = openStore({ dataDir: dir, migrations: allMigrations });
  const commits = new GroupCommit(db);
  const clock = opts.clock ?? { t: Date.now() };
  const now = () => clock.t;
  const events = new EventLog(db, commits, now);
  const metrics = new MetricsRegistry();
  const engine = new TaskDispatcher(
    {
      config: { dataDir: dir, leaseGraceSeconds: opts.leaseGraceSeconds ?? 10, speculativeK: opts.speculativeK ?? 2 },
      log: silentLogger(),
      db,
      commits,
      events,
      metrics,
      now,
    },
    { timer: false, ...opts },
  );
  return {
    dir,
    db,
    commits,
    events,
    metrics,
    engine,
    clock,
    close() {
      engine.stop();
      commits.close();
      db.close();
    },
  };
}

export function node(n: number, labels: string[] = [], cores = 4, memoryMiB = 8192): NodeCapacity {
  return { mac: `52:54:00:00:01:${n.toString(16).padStart(2, '0')}` as Mac, name: `node${n}`, labels, cores, memoryMiB };
}

export function okResult(a: Pick<TaskAssignment, 'taskId' | 'attempt'>, over: Partial<TaskResult> = {}): TaskResult {
  return {
    taskId: a.taskId,
    attempt: a.attempt,
    exitCode: 0,
    signal: null,
    timedOut: false,
    error: null,
    startedAt: 1,
    durationMs: 5,
    maxRssKiB: 1000,
    stdout: `out ${a.taskId}`,
    stderr: '',
    stdoutTruncated: false,
    stderrTruncated: false,
    outputsTarGzB64: null,
    ...over,
  };
}
