/**
 * The demo job's reduction: the results of `dispatcherctl results JOB --format jsonl` (one
 * object per task, `{taskId, params, state, result: {node, stdout, ...}}`) summed into an
 * estimate of π, with the tasks each node ran, and the checks `DEMO_EXIT=1` fails on. Pure.
 */

export interface TaskLine {
  taskId: number;
  state: string;
  result: { node: string | null; exitCode: number | null; stdout: string } | null;
}

export interface PiSummary {
  tasks: number;
  done: number;
  /** Tasks not done, or done without a "<hits> <samples>" line. */
  bad: { taskId: number; why: string }[];
  hits: number;
  samples: number;
  /** 4 × hits / samples; NaN without samples. */
  estimate: number;
  /** Tasks done per node name. */
  perNode: Map<string, number>;
}

const COUNT_LINE = /^(\d+) (\d+)$/;

export function parseResults(jsonl: string): TaskLine[] {
  return jsonl
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l, i) => {
      try {
        return JSON.parse(l) as TaskLine;
      } catch (err) {
        throw new Error(`results line ${i + 1} is not JSON: ${l.slice(0, 120)}`, { cause: err });
      }
    });
}

export function summarize(lines: readonly TaskLine[]): PiSummary {
  const s: PiSummary = { tasks: lines.length, done: 0, bad: [], hits: 0, samples: 0, estimate: NaN, perNode: new Map() };
  for (const t of lines) {
    if (t.state !== 'done' || !t.result) {
      s.bad.push({ taskId: t.taskId, why: `state ${t.state}` });
      continue;
    }
    // The last line of the task's output is its count; PROGRESS lines come before it.
    const last = t.result.stdout.trim().split('\n').pop() ?? '';
    const m = COUNT_LINE.exec(last.trim());
    if (!m) {
      s.bad.push({ taskId: t.taskId, why: `no "<hits> <samples>" line in its output: ${JSON.stringify(last.slice(0, 80))}` });
      continue;
    }
    const hits = Number(m[1]);
    const samples = Number(m[2]);
    if (hits > samples) {
      s.bad.push({ taskId: t.taskId, why: `more hits than samples (${hits} > ${samples})` });
      continue;
    }
    s.done++;
    s.hits += hits;
    s.samples += samples;
    const node = t.result.node ?? '(unknown)';
    s.perNode.set(node, (s.perNode.get(node) ?? 0) + 1);
  }
  if (s.samples > 0) s.estimate = (4 * s.hits) / s.samples;
  return s;
}

/** What is wrong with the run, as sentences; empty when it passed. */
export function problems(s: PiSummary, expect: { tasks: number; nodes: readonly string[]; tolerance: number }): string[] {
  const out: string[] = [];
  if (s.tasks !== expect.tasks) out.push(`${s.tasks} tasks in the results, expected ${expect.tasks}`);
  if (s.bad.length) out.push(`${s.bad.length} tasks failed or gave no count (first: task ${s.bad[0]!.taskId}: ${s.bad[0]!.why})`);
  for (const n of expect.nodes) if (!s.perNode.get(n)) out.push(`${n} ran no task`);
  if (!(Math.abs(s.estimate - Math.PI) < expect.tolerance)) out.push(`π estimate ${s.estimate} is off by more than ${expect.tolerance}`);
  return out;
}
