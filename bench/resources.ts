/**
 * What holding tasks to their requests costs (`make bench-resources`), QEMU TCG: one node
 * (2 vCPUs, 1 GiB) of the e2e image runs TASKS `true` tasks, with its agent enforcing
 * (a cgroup v2 per task: made, entered, read and removed) and without (the same image booted
 * with `cgroup_disable=memory`, so the agent packs tasks but runs them as before). The two
 * ways alternate, RUNS times each; the node boots anew for each run.
 *
 *   RUNS=3 TASKS=300 node dist/bench/resources.mjs
 *
 * Prints `RESULT name=... key=value ...` lines: tasks/s from submission to the last result,
 * per run and as medians, and their ratio. The host's own figure (real agents on the host,
 * `bench/agents.mjs e2e`) cannot show this: this host has cgroup v1, so agents there never enforce.
 */
import { writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { buildForE2e, PxeLab } from '../test/lab/pxe-lab.js';

const RUNS = Number(process.env.RUNS ?? 3);
const TASKS = Number(process.env.TASKS ?? 300);
type Mode = 'enforced' | 'unenforced';

function result(name: string, fields: Record<string, string | number | boolean>): void {
  console.log(
    `RESULT name=${name} ${Object.entries(fields)
      .map(([k, v]) => `${k}=${v}`)
      .join(' ')}`,
  );
}
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

interface NodeResources {
  resources?: { enforced: boolean };
}
interface JobRow {
  id: number;
  state: string;
  counts: { done: number; failed: number };
}

async function once(mode: Mode, run: number): Promise<number> {
  const rack = await PxeLab.create({ area: 'resbench', subnet: 71 });
  try {
    const node = await rack.machine({ name: 'node1', cpus: 2 });
    await rack.startDispatcher({
      cluster: rack.clusterNodes(),
      args: mode === 'unenforced' ? ['--kernel-args', 'cgroup_disable=memory'] : [],
    });
    await node.powerOn();
    const up = (await rack.nodeUp('node1', 600_000)) as NodeResources;
    if (up.resources?.enforced !== (mode === 'enforced'))
      throw new Error(`run ${run} ${mode}: the node says enforced=${up.resources?.enforced}`);
    const params = join(rack.dataDir, 'params.csv');
    writeFileSync(params, `i\n${Array.from({ length: TASKS }, (_, i) => i).join('\n')}\n`);
    const t0 = Date.now();
    const id = Number((await rack.ok('submit', '--params', params, '--', 'true', '{i}')).trim());
    const job = await rack.until(
      `${TASKS} tasks done (${mode})`,
      async () => {
        const j = (await rack.json<{ jobs: JobRow[] }>('jobs')).jobs.find((x) => x.id === id);
        return j?.state === 'done' ? j : undefined;
      },
      900_000,
      200,
    );
    const seconds = (Date.now() - t0) / 1000;
    if (job.counts.done !== TASKS) throw new Error(`run ${run} ${mode}: ${job.counts.done} of ${TASKS} done, ${job.counts.failed} failed`);
    const rate = TASKS / seconds;
    result('resources-run', {
      run,
      mode,
      tasks: TASKS,
      seconds: seconds.toFixed(2),
      tasks_per_s: rate.toFixed(1),
      load1: loadavg()[0]!.toFixed(2),
    });
    return rate;
  } finally {
    await rack.cleanup();
  }
}

async function main(): Promise<void> {
  buildForE2e();
  console.log(
    `== bench-resources: 1 QEMU TCG node, 2 vCPUs, ${TASKS} \`true\` tasks; RUNS=${RUNS}; load ${loadavg()
      .map((l) => l.toFixed(2))
      .join(',')}`,
  );
  const rates: Record<Mode, number[]> = { enforced: [], unenforced: [] };
  for (let run = 1; run <= RUNS; run++) {
    const order: Mode[] = run % 2 ? ['enforced', 'unenforced'] : ['unenforced', 'enforced'];
    for (const mode of order) rates[mode].push(await once(mode, run));
  }
  for (const mode of ['enforced', 'unenforced'] as const)
    result(`resources-${mode}`, { tasks_per_s_median: median(rates[mode]).toFixed(1), runs: rates[mode].length, accel: 'tcg' });
  result('resources-ratio', { enforced_over_unenforced: (median(rates.enforced) / median(rates.unenforced)).toFixed(3) });
}

main().catch((err: unknown) => {
  console.error(`bench-resources: ${(err as Error).message}`);
  process.exit(1);
});
