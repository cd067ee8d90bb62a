#!/usr/bin/env node
/**
 * Summary of a side-by-side dispatch bench run (bench/dispatch.sh): reads its results.txt (the
 * RESULT lines of every step, tagged with round, side, variant and load), prints medians over
 * the rounds, ratios against the peers of the same run (the ratio of the medians, and the
 * median of the per-round ratios, which cancels load that hit one round), and which of issue
 * 5's targets are met, as RESULT lines; writes the same as a Markdown table.
 *
 *   node bench/dispatch-report.mjs results.txt [summary.md]
 */
import { readFileSync, writeFileSync } from 'node:fs';

const [file, mdFile] = process.argv.slice(2);
if (!file) {
  console.error('usage: dispatch-report.mjs results.txt [summary.md]');
  process.exit(2);
}
const rows = readFileSync(file, 'utf8')
  .split('\n')
  .filter((l) => l.startsWith('RESULT '))
  .map((l) => {
    // The first occurrence of a key wins (agents.mjs repeats `agents=` and `tasks=` in its CPU note).
    const r = {};
    for (const kv of l.slice(7).trim().split(/\s+/)) {
      const eq = kv.indexOf('=');
      if (eq > 0 && !(kv.slice(0, eq) in r)) r[kv.slice(0, eq)] = kv.slice(eq + 1);
    }
    return r;
  });

const median = (xs) => {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return NaN;
  return v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
};
/** Lines of one figure: name, variant (default "default") and other fields that must match. */
const pick = (name, match = {}) =>
  rows.filter(
    (r) =>
      r.name === name &&
      (r.variant ?? 'default') === (match.variant ?? 'default') &&
      Object.entries(match).every(([k, v]) => k === 'variant' || r[k] === String(v)),
  );
const med = (name, field, match) => median(pick(name, match).map((r) => Number(r[field])));
const all = (name, field, match) => pick(name, match).map((r) => Number(r[field]));
const loads = (name, match) => {
  const ls = pick(name, match)
    .flatMap((r) => [Number(r.load1_before), Number(r.load1_after)])
    .filter(Number.isFinite);
  return ls.length ? `${Math.min(...ls).toFixed(1)}–${Math.max(...ls).toFixed(1)}` : 'n/a';
};
/** Median over rounds of ours/peer measured in the same round. */
const paired = (ours, peer) => {
  const rs = [];
  for (const o of ours.rows) {
    const p = peer.rows.find((x) => x.round === o.round);
    if (p) rs.push(Number(o[ours.field]) / Number(p[peer.field]));
  }
  return median(rs);
};

const fmt = (x, d = 0) => (Number.isFinite(x) ? x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }) : 'n/a');
const out = [];
const table = [];
function figure(id, what, value, unit, target, met, detail = '') {
  const m = met === undefined ? 'n/a' : Number.isNaN(value) ? 'n/a' : met ? 'yes' : 'NO';
  out.push(
    `RESULT name=dispatch_summary figure=${id} value=${Number.isFinite(value) ? +value.toFixed(3) : 'nan'} unit=${unit} target=${target.replace(/ /g, '_') || 'none'} met=${m}`,
  );
  table.push(
    `| ${what} | ${Number.isFinite(value) ? fmt(value, unit === 'intervals' ? 3 : unit === 'x' ? 2 : unit === 's' ? 1 : 0) : 'n/a'} ${unit === 'tasks/s' ? '' : unit} | ${target || '—'} | ${m} | ${detail} |`,
  );
}

// 1. throughput
const real = { rows: pick('dispatch_real_throughput'), field: 'tasks_per_s' };
const bull = { rows: pick('bullmq-remove'), field: 'tasks_per_s' };
const bullKeep = { rows: pick('bullmq-keep'), field: 'tasks_per_s' };
const gw = { rows: pick('graphile-worker'), field: 'tasks_per_s' };
const tReal = med('dispatch_real_throughput', 'tasks_per_s');
const tBull = med('bullmq-remove', 'tasks_per_s');
const tBullKeep = med('bullmq-keep', 'tasks_per_s');
const tGw = med('graphile-worker', 'tasks_per_s');
const eng1 = med('dispatch_engine_throughput', 'tasks_per_s', { slots: 1 });
const eng4 = med('dispatch_engine_throughput', 'tasks_per_s', { slots: 4 });
figure(
  'throughput_real',
  `dispatcher process, 100 sim agents × ${pick('dispatch_real_throughput')[0]?.slots ?? '?'} slots, tasks/s (runs: ${all('dispatch_real_throughput', 'tasks_per_s').join(' / ')})`,
  tReal,
  'tasks/s',
  '≥ 25,000',
  tReal >= 25_000,
  `hand-out→ack p50/p99 ${fmt(med('dispatch_real_throughput', 'handout_to_ack_p50_ms'), 1)}/${fmt(med('dispatch_real_throughput', 'handout_to_ack_p99_ms'), 1)} ms; dispatcher ${fmt(med('dispatch_real_throughput', 'dispatcher_cpu_us_per_task'), 1)} µs CPU/task; load ${loads('dispatch_real_throughput')}`,
);
const t4 = med('dispatch_real_throughput', 'tasks_per_s', { variant: 'slots4' });
figure(
  'throughput_real_4slots',
  `dispatcher process, 100 sim agents × 4 slots (smaller batches: more messages per task)`,
  t4,
  'tasks/s',
  '',
  undefined,
  `hand-out→ack p50/p99 ${fmt(med('dispatch_real_throughput', 'handout_to_ack_p50_ms', { variant: 'slots4' }), 1)}/${fmt(med('dispatch_real_throughput', 'handout_to_ack_p99_ms', { variant: 'slots4' }), 1)} ms; dispatcher ${fmt(med('dispatch_real_throughput', 'dispatcher_cpu_us_per_task', { variant: 'slots4' }), 1)} µs CPU/task; ÷ BullMQ ${fmt(t4 / med('bullmq-remove', 'tasks_per_s'), 2)}, ÷ graphile-worker ${fmt(t4 / med('graphile-worker', 'tasks_per_s'), 2)}`,
);
figure(
  'throughput_engine',
  `engine in process, 100 agents × 1 slot (× 4: ${fmt(eng4)})`,
  eng1,
  'tasks/s',
  '≥ 25,000',
  eng1 >= 25_000,
  `p50/p99 ${fmt(med('dispatch_engine_throughput', 'p50_ms', { slots: 1 }), 1)}/${fmt(med('dispatch_engine_throughput', 'p99_ms', { slots: 1 }), 1)} ms; load ${loads('dispatch_engine_throughput', { slots: 1 })}`,
);
figure(
  'peer_bullmq',
  `BullMQ no-op, removeOnComplete (keep: ${fmt(tBullKeep)})`,
  tBull,
  'tasks/s',
  '',
  undefined,
  `p50/p99 ${fmt(med('bullmq-remove', 'p50_ms'))}/${fmt(med('bullmq-remove', 'p99_ms'))} ms; load ${loads('bullmq-remove')}`,
);
figure(
  'peer_graphile_worker',
  'graphile-worker no-op (fsync, synchronous_commit)',
  tGw,
  'tasks/s',
  '',
  undefined,
  `p50/p99 ${fmt(med('graphile-worker', 'p50_ms'))}/${fmt(med('graphile-worker', 'p99_ms'))} ms; load ${loads('graphile-worker')}`,
);
figure(
  'ratio_real_vs_bullmq',
  'dispatcher process ÷ BullMQ no-op',
  tReal / tBull,
  'x',
  '≥ 2',
  tReal / tBull >= 2,
  `per-round median ${fmt(paired(real, bull), 2)}; ÷ BullMQ keeping results ${fmt(tReal / tBullKeep, 2)} (per round ${fmt(paired(real, bullKeep), 2)}); engine ÷ BullMQ ${fmt(eng1 / tBull, 2)}`,
);
figure(
  'ratio_real_vs_graphile',
  'dispatcher process ÷ graphile-worker',
  tReal / tGw,
  'x',
  '≥ 8',
  tReal / tGw >= 8,
  `per-round median ${fmt(paired(real, gw), 2)}; engine ÷ graphile-worker ${fmt(eng1 / tGw, 2)}`,
);
// 1b. the postgres section: ours on the PostgreSQL store beside graphile-worker on the same server
const pgOurs = { rows: pick('dispatch-postgres', { variant: 'postgres' }), field: 'tasks_per_s' };
const pgGw = { rows: pick('graphile-worker-same-pg', { variant: 'postgres' }), field: 'jobs_per_s' };
if (pgOurs.rows.length || pgGw.rows.length) {
  const pg = (name, field) => med(name, field, { variant: 'postgres' });
  const tPg = pg('dispatch-postgres', 'tasks_per_s');
  const tPgGw = pg('graphile-worker-same-pg', 'jobs_per_s');
  figure(
    'throughput_postgres',
    `dispatcher process on PostgreSQL (fsync on), 100 sim agents × ${pgOurs.rows[0]?.slots ?? '?'} slots, tasks/s (runs: ${pgOurs.rows.map((r) => r.tasks_per_s).join(' / ')})`,
    tPg,
    'tasks/s',
    '',
    undefined,
    `÷ SQLite same run ${fmt(tPg / tReal, 2)}; dispatcher ${fmt(pg('dispatch-postgres', 'dispatcher_cpu_us_per_task'), 1)} µs CPU/task; PostgreSQL ${fmt(pg('dispatch-postgres', 'pg_commits_per_task'), 4)} commits and ${fmt(pg('dispatch-postgres', 'pg_wal_bytes_per_task'))} WAL bytes per task; ${fmt(pg('dispatch-postgres', 'tasks_per_sync'), 1)} tasks per shipped batch (${fmt(pg('dispatch-postgres', 'sync_ms_mean'), 2)} ms each, ${fmt(pg('dispatch-postgres', 'sync_busy_pct'))} % of the time); load ${loads('dispatch-postgres', { variant: 'postgres' })}`,
  );
  figure(
    'peer_graphile_worker_same_pg',
    `graphile-worker no-op on the same PostgreSQL (runs: ${pgGw.rows.map((r) => r.jobs_per_s).join(' / ')})`,
    tPgGw,
    'tasks/s',
    '',
    undefined,
    `PostgreSQL ${fmt(pg('graphile-worker-same-pg', 'pg_commits_per_task'), 2)} commits and ${fmt(pg('graphile-worker-same-pg', 'pg_wal_bytes_per_task'))} WAL bytes per job; load ${loads('graphile-worker-same-pg', { variant: 'postgres' })}`,
  );
  figure(
    'ratio_postgres_vs_graphile',
    'dispatcher on PostgreSQL ÷ graphile-worker, same server',
    tPg / tPgGw,
    'x',
    '≥ 3',
    tPg / tPgGw >= 3,
    `per-round median ${fmt(paired(pgOurs, pgGw), 2)}`,
  );
}
const lat50 = med('dispatch_real_latency', 'p50_ms');
const lat99 = med('dispatch_real_latency', 'p99_ms');
figure(
  'latency_submit_to_result_p99',
  `submit → durable result, one-task jobs on idle agents, p50 ${fmt(lat50, 1)} ms / p99`,
  lat99,
  'ms',
  '',
  undefined,
  `same run, one add per job: BullMQ p50/p99 ${fmt(med('bullmq-remove', 'p50_ms', { variant: 'latency' }), 1)}/${fmt(med('bullmq-remove', 'p99_ms', { variant: 'latency' }), 1)} ms, graphile-worker ${fmt(med('graphile-worker', 'p50_ms', { variant: 'latency' }), 1)}/${fmt(med('graphile-worker', 'p99_ms', { variant: 'latency' }), 1)} ms; load ${loads('dispatch_real_latency')}`,
);
figure(
  'ws_echo_floor',
  'ws echo, 50 clients (round trips/s: one message each way per task)',
  med('ws-echo', 'tasks_per_s'),
  'tasks/s',
  '',
  undefined,
  `load ${loads('ws-echo')}`,
);

// 2. end to end
const e2e = { rows: pick('agents-e2e-true'), field: 'tasks_per_s' };
const slurm = { rows: pick('slurm-array'), field: 'tasks_per_s' };
const bspawn = { rows: pick('bullmq-remove-spawn', { variant: 'spawn' }), field: 'tasks_per_s' };
const tE2e = med('agents-e2e-true', 'tasks_per_s');
const tSlurm = med('slurm-array', 'tasks_per_s');
const tBspawn = med('bullmq-remove-spawn', 'tasks_per_s', { variant: 'spawn' });
const tBare = med('bare-node-spawn-true', 'tasks_per_s');
const e2eRow = pick('agents-e2e-true')[0];
figure(
  'e2e_true',
  `real agents running \`true\` (${e2eRow ? `${e2eRow.agents} × ${e2eRow.slots} slots, prefetch ${e2eRow.prefetch}` : '?'}; runs: ${all('agents-e2e-true', 'tasks_per_s').join(' / ')})`,
  tE2e,
  'tasks/s',
  '≥ 1,150',
  tE2e >= 1150,
  `bare Node loop spawning \`true\` ×8: ${fmt(tBare)}/s; CPU ms/task dispatcher ${fmt(med('agents-e2e-true', 'dispatcher'), 2)}; load ${loads('agents-e2e-true')}`,
);
figure('peer_slurm_array', 'Slurm job array of 1,000 `true`', tSlurm, 'tasks/s', '', undefined, `load ${loads('slurm-array')}`);
figure(
  'peer_bullmq_spawn',
  `BullMQ, each job execs \`true\` (keep: ${fmt(med('bullmq-keep-spawn', 'tasks_per_s', { variant: 'spawn' }))})`,
  tBspawn,
  'tasks/s',
  '',
  undefined,
  `load ${loads('bullmq-remove-spawn', { variant: 'spawn' })}`,
);
figure(
  'ratio_e2e_vs_slurm',
  'end to end ÷ Slurm array',
  tE2e / tSlurm,
  'x',
  '≥ 20',
  tE2e / tSlurm >= 20,
  `per-round median ${fmt(paired(e2e, slurm), 2)}`,
);
figure(
  'ratio_e2e_vs_bullmq_spawn',
  'end to end ÷ BullMQ spawn',
  tE2e / tBspawn,
  'x',
  '≥ 1.7',
  tE2e / tBspawn >= 1.7,
  `per-round median ${fmt(paired(e2e, bspawn), 2)}`,
);

// 3. idle
const rssMiB = med('dispatcher-idle-agents', 'rss_mib');
const idleCpu = med('dispatcher-idle-agents', 'cpu_pct');
figure(
  'idle_1000_rss',
  `1,000 sim agents heartbeating: dispatcher RSS (runs, MiB: ${all('dispatcher-idle-agents', 'rss_mib').join(' / ')})`,
  rssMiB * 1.048576,
  'MB',
  '≤ 300 MB',
  rssMiB * 1.048576 <= 300,
  `load ${loads('dispatcher-idle-agents')}`,
);
figure(
  'idle_1000_cpu',
  `1,000 sim agents heartbeating: dispatcher CPU (runs: ${all('dispatcher-idle-agents', 'cpu_pct').join(' / ')})`,
  idleCpu,
  '%',
  '≤ 10 %',
  idleCpu <= 10,
  '',
);

// 4. depth and the 1M submission
const d10 = {
  rate: med('dispatch_real_depth', 'tasks_per_s', { queued: 10000 }),
  p99: med('dispatch_real_depth', 'handout_to_ack_p99_ms', { queued: 10000 }),
};
const d1m = {
  rate: med('dispatch_real_depth', 'tasks_per_s', { queued: 1000000 }),
  p99: med('dispatch_real_depth', 'handout_to_ack_p99_ms', { queued: 1000000 }),
};
const depthPaired = paired(
  { rows: pick('dispatch_real_depth', { queued: 1000000 }), field: 'tasks_per_s' },
  { rows: pick('dispatch_real_depth', { queued: 10000 }), field: 'tasks_per_s' },
);
figure(
  'depth_rate_ratio',
  `hand-out rate, 1,000,000 ÷ 10,000 queued (${fmt(d1m.rate)} vs ${fmt(d10.rate)} tasks/s)`,
  d1m.rate / d10.rate,
  'x',
  '≥ 0.8 (within 20 %)',
  d1m.rate / d10.rate >= 0.8,
  `per-round median ${fmt(depthPaired, 2)} (a ratio well above 1 means load hit the 10,000 runs); load ${loads('dispatch_real_depth')}`,
);
figure(
  'depth_p99_ratio',
  `hand-out → ack p99, 1,000,000 ÷ 10,000 queued (${fmt(d1m.p99, 1)} vs ${fmt(d10.p99, 1)} ms)`,
  d1m.p99 / d10.p99,
  'x',
  '≤ 1.2 (within 20 %)',
  d1m.p99 / d10.p99 <= 1.2,
  '',
);
const sub = med('dispatch_real_submit', 'seconds', { rows: 1000000 });
figure(
  'submit_1m',
  `\`dispatcherctl submit --params\` 1,000,000-row CSV (runs: ${all('dispatch_real_submit', 'seconds', { rows: 1000000 }).join(' / ')} s)`,
  sub,
  's',
  '< 60 s',
  sub < 60,
  `load ${loads('dispatch_real_submit', { rows: 1000000 })}`,
);

// 5. recovery
const rec = med('dispatch_real_recovery', 'first_task_ms');
figure(
  'recovery_first_task',
  `kill -9 with ~1,000,000 queued: restart exec → first task to a waiting agent (runs: ${all('dispatch_real_recovery', 'first_task_ms').join(' / ')} ms)`,
  rec / 1000,
  's',
  '≤ 2 s',
  rec <= 2000,
  `exec → listening ${fmt(med('dispatch_real_recovery', 'listen_ms'))} ms, → first result acknowledged ${fmt(med('dispatch_real_recovery', 'first_ack_ms'))} ms; load ${loads('dispatch_real_recovery')}`,
);

// 6. lost and busy nodes
// From the milliseconds (the per-run lines round their intervals).
const lostOnce = pick('dispatch_lost_node_once').map((r) => Number(r.last_message_to_rehand_ms) / (1000 * Number(r.heartbeat_s)));
const lostMax = Math.max(...lostOnce);
const lostHb = pick('dispatch_lost_node')[0]?.heartbeat_s ?? '?';
figure(
  'lost_node',
  `frozen agent: last message → its tasks handed out again, worst of ${lostOnce.length} (heartbeat ${lostHb} s)`,
  lostOnce.length ? lostMax : NaN,
  'intervals',
  '≤ 3 intervals',
  lostMax <= 3,
  `worst ${fmt(Math.max(...all('dispatch_lost_node_once', 'last_message_to_rehand_ms')))} ms, median ${fmt(median(lostOnce), 3)} intervals; load ${loads('dispatch_lost_node')}`,
);
const busy = pick('dispatch_busy_node')[0];
figure(
  'busy_node_lost_events',
  busy
    ? `${busy.slots} CPU-bound tasks on ${busy.cores} cores for ${busy.seconds} s (machine ${busy.machine_cpu_busy_pct} % busy), heartbeat ${busy.heartbeat_s} s: times declared lost`
    : 'busy node: times declared lost',
  busy ? Number(busy.lost_events) : NaN,
  '',
  '0',
  busy ? Number(busy.lost_events) === 0 : undefined,
  busy
    ? `longest heartbeat gap ${busy.max_heartbeat_gap_ms} ms, longest silence ${busy.max_silence_ms} ms (lost after ${busy.lost_after_ms}); tasks done ${busy.tasks_done}, failed ${busy.tasks_failed}; load ${loads('dispatch_busy_node')}`
    : '',
);

const failed = pick('step_failed');
for (const f of failed) out.push(`RESULT name=dispatch_summary figure=step_failed step=${f.step} round=${f.round} rc=${f.rc}`);
console.log(out.join('\n'));
if (mdFile) {
  const md = ['| figure | median | target | met | notes |', '|---|---|---|---|---|', ...table];
  if (failed.length) md.push('', `Failed steps: ${failed.map((f) => `${f.step} (round ${f.round}, rc ${f.rc})`).join(', ')}`);
  writeFileSync(mdFile, md.join('\n') + '\n');
}
