/**
 * A job's results as CSV or JSON lines, and its tasks' output files as one tar, streamed a
 * page of tasks at a time (a million-task job is never held in memory).
 *
 * CSV columns: task_id, index, the params columns (prefixed `param_` if a name collides with
 * a fixed column), state, exit_code, signal, timed_out, error, attempt, node, started_at,
 * duration_ms, max_rss_kib, outputs_bytes, stdout_truncated, stderr_truncated, stdout, stderr.
 * JSON lines: one object per task, `{ taskId, index, params, state, result }` (result null
 * while the task has none).
 *
 * The outputs tar holds `task-<id>/<path>` for every file the tasks returned. Those tars come
 * from agents, so entry names are checked: absolute paths, `..` and anything but regular files
 * and directories are left out. Each stored tar is inflated as a stream (zlib off the event
 * loop, tar-stream entry by entry, with the reader's backpressure) and stops at the outputs
 * cap: a download holds a few chunks in memory, whatever the tars inflate to.
 */
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { posix } from 'node:path';
import tar from 'tar-stream';
import { byteCap } from '../protocol/compression.js';
import type { TaskDispatcher } from './engine.js';

/** Tasks read per page while exporting. */
export const EXPORT_PAGE = 2000;

export type ResultsFormat = 'csv' | 'jsonl';

type NodeName = (mac: string) => string | undefined;

const FIXED = [
  'task_id',
  'index',
  'state',
  'exit_code',
  'signal',
  'timed_out',
  'error',
  'attempt',
  'node',
  'started_at',
  'duration_ms',
  'max_rss_kib',
  'outputs_bytes',
  'stdout_truncated',
  'stderr_truncated',
  'stdout',
  'stderr',
];

export function exportResults(
  engine: TaskDispatcher,
  jobId: number,
  format: ResultsFormat,
  nodeName: NodeName = () => undefined,
): Readable {
  const job = engine.getJob(jobId); // throws DSP_ERR_JOB_NOT_FOUND before the answer starts
  const columns = job.columns ?? [];
  async function* lines(): AsyncGenerator<string> {
    if (format === 'csv') {
      const names = columns.map((c) => (FIXED.includes(c) ? `param_${c}` : c));
      yield csvLine(['task_id', 'index', ...names, ...FIXED.slice(2)]);
    }
    let after = 0;
    for (;;) {
      const rows = engine.resultRows(jobId, after, EXPORT_PAGE);
      if (rows.length === 0) return;
      let out = '';
      for (const r of rows) {
        after = r.id;
        const state = engine.taskState(r.state, jobId, r.id);
        const params = r.vars ? (JSON.parse(r.vars) as Record<string, string>) : null;
        const index = r.id - job.firstTaskId;
        const hasResult = r.task_id !== null && r.task_id !== undefined;
        const node = hasResult && r.mac ? (nodeName(r.mac) ?? r.mac) : null;
        if (format === 'csv') {
          out += csvLine([
            r.id,
            index,
            ...columns.map((c) => params?.[c] ?? ''),
            state,
            hasResult ? r.exit_code : null,
            hasResult ? r.signal : null,
            hasResult ? r.timed_out : null,
            hasResult ? r.error : null,
            hasResult ? r.attempt : null,
            node,
            hasResult ? r.started_at : null,
            hasResult ? r.duration_ms : null,
            hasResult ? r.max_rss_kib : null,
            hasResult ? (r.outputs?.length ?? 0) : null,
            hasResult ? r.stdout_truncated : null,
            hasResult ? r.stderr_truncated : null,
            hasResult ? r.stdout : null,
            hasResult ? r.stderr : null,
          ]);
        } else {
          out +=
            JSON.stringify({
              taskId: r.id,
              index,
              params,
              state,
              result: hasResult
                ? {
                    attempt: r.attempt,
                    node,
                    mac: r.mac,
                    exitCode: r.exit_code,
                    signal: r.signal,
                    timedOut: r.timed_out === 1,
                    error: r.error,
                    startedAt: r.started_at,
                    durationMs: r.duration_ms,
                    maxRssKiB: r.max_rss_kib,
                    // Outcome oom: killed at its memory request, with its cgroup's peak.
                    ...(r.oom === 1 ? { oom: true, memPeakKiB: r.mem_peak_kib } : {}),
                    outputsBytes: r.outputs?.length ?? 0,
                    stdout: r.stdout,
                    stderr: r.stderr,
                    stdoutTruncated: r.stdout_truncated === 1,
                    stderrTruncated: r.stderr_truncated === 1,
                  }
                : null,
            }) + '\n';
        }
      }
      yield out;
      if (rows.length < EXPORT_PAGE) return;
    }
  }
  return Readable.from(lines());
}

export function csvField(v: unknown): string {
  if (v === null || v === undefined) return '';
  const s = String(v);
  return /[",\r\n]/.test(s) || s !== s.trim() ? `"${s.replaceAll('"', '""')}"` : s;
}

function csvLine(fields: unknown[]): string {
  return fields.map(csvField).join(',') + '\n';
}

/** One tar of every task's returned files, under `task-<id>/`; each task's tar inflates to at most `maxInflatedBytes`. */
export function exportOutputs(engine: TaskDispatcher, jobId: number, maxInflatedBytes: number): Readable {
  engine.getJob(jobId); // 404 before the answer starts
  const pack = tar.pack();
  const fill = async () => {
    let after = 0;
    for (;;) {
      const rows = engine.outputRows(jobId, after, 200);
      for (const r of rows) {
        after = r.task_id;
        await repack(pack, `task-${r.task_id}`, r.outputs, maxInflatedBytes).catch((err: Error) =>
          addEntry(
            pack,
            { name: `task-${r.task_id}/.outputs-error.txt`, type: 'file', mode: 0o644 },
            Buffer.from(`outputs of task ${r.task_id} could not be read: ${err.message}\n`),
          ),
        );
      }
      if (rows.length < 200) break;
    }
    pack.finalize();
  };
  fill().catch((err) => pack.destroy(err as Error));
  return pack as unknown as Readable;
}

async function repack(pack: tar.Pack, prefix: string, gz: Buffer, maxBytes: number): Promise<void> {
  const extract = tar.extract();
  const inflating = pipeline(Readable.from([gz]), createGunzip(), byteCap(maxBytes, 'the outputs tar'), extract);
  inflating.catch(() => {}); // its error also ends the entries below, and is thrown there
  for await (const entry of extract) {
    const h = entry.header;
    const name = safeName(h.name);
    const size = h.size ?? 0;
    if (!name || (h.type !== 'file' && h.type !== 'directory') || size > maxBytes) {
      entry.resume();
      continue;
    }
    const header = { name: `${prefix}/${name}`, type: h.type, mode: (h.mode ?? 0o644) & 0o777, mtime: h.mtime ?? new Date() };
    if (h.type === 'directory') {
      entry.resume();
      await addEntry(pack, header, Buffer.alloc(0));
    } else await copyEntry(pack, { ...header, size }, entry);
  }
  await inflating;
}

/**
 * Streams one file into the pack, waiting for the reader. If its source fails half-way the
 * entry is completed with zeros (its size is in the header already), so the tar stays valid
 * and the error note that follows is readable.
 */
async function copyEntry(
  pack: tar.Pack,
  header: Partial<tar.Header> & { name: string; size: number },
  source: AsyncIterable<unknown>,
): Promise<void> {
  let sink!: ReturnType<tar.Pack['entry']>;
  const done = new Promise<void>((resolve, reject) => {
    sink = pack.entry(header, (err) => (err ? reject(err) : resolve()));
  });
  let written = 0;
  const put = async (chunk: Buffer) => {
    written += chunk.length;
    if (!sink.write(chunk)) await drained(sink, pack);
  };
  let failure: unknown;
  try {
    for await (const chunk of source) await put(chunk as Buffer);
  } catch (err) {
    failure = err;
    for (let left = header.size - written; left > 0; left -= 65_536) await put(Buffer.alloc(Math.min(left, 65_536)));
  }
  sink.end(undefined);
  await done;
  if (failure) throw failure;
}

/** Resolves when the entry takes more, rejects when the download went away (the pack is destroyed). */
function drained(sink: ReturnType<tar.Pack['entry']>, pack: tar.Pack): Promise<void> {
  if (pack.destroyed) return Promise.reject(new Error('the download was closed'));
  return new Promise((resolve, reject) => {
    const onDrain = () => {
      off();
      resolve();
    };
    const onClose = () => {
      off();
      reject(new Error('the download was closed'));
    };
    const off = () => {
      sink.removeListener('drain', onDrain);
      pack.removeListener('close', onClose);
    };
    sink.once('drain', onDrain);
    pack.once('close', onClose);
  });
}

function addEntry(pack: tar.Pack, header: Partial<tar.Header> & { name: string }, body: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const cb = (err?: Error | null) => (err ? reject(err) : resolve());
    if (header.type === 'directory') pack.entry(header, cb);
    else pack.entry({ ...header, size: body.length }, body, cb);
  });
}

/** A relative path inside the task's out/, or null. */
export function safeName(name: string): string | null {
  if (name.includes('\0')) return null;
  const n = posix.normalize(name.replace(/^\.\/+/, ''));
  if (n === '.' || n === '' || n.startsWith('/') || n === '..' || n.startsWith('../')) return null;
  return n.replace(/\/$/, '');
}
