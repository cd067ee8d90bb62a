/**
 * Job and task commands: submit, jobs, tasks, task, results, cancel. Owned by the dispatch
 * engine; written the way ctl/command.ts shows.
 *
 * Uploads (inputs tars, streamed params files) and downloads (results, outputs tars) are raw
 * HTTP bodies rather than JSON, so they go through `raw()` below with the same target, token
 * and error handling as the API client.
 */
import { Option } from 'commander';
import { createReadStream, createWriteStream, readFileSync, statSync } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import type { CommandModule, CtlContext } from '../command.js';
import { CtlError, EXIT, usageError } from '../errors.js';
import { formatBytes, formatDuration, formatMs, formatTime, keyValues, table, type Column } from '../output.js';
import type { JobSubmission, JobView, TaskDetail, TaskSummary } from '../../api/jobs/schemas.js';
import {
  commandText,
  MAX_TIMEOUT_SECONDS,
  MIN_TIMEOUT_SECONDS,
  parseSizeMiB,
  SWEEP_CONTENT_TYPE,
  TASK_STATES,
} from '../../api/jobs/schemas.js';

/** How often `submit --wait` polls the job. */
const WAIT_POLL_MS = 500;

interface SubmitOpts {
  params?: string;
  format?: 'csv' | 'jsonl';
  name?: string;
  timeout?: string;
  priority?: string;
  attempts?: string;
  retries?: string;
  label?: string[];
  minCores?: string;
  minMem?: string;
  cores?: string;
  mem?: string;
  gpus?: string;
  image?: string;
  env?: string[];
  cwd?: string;
  stdin?: string;
  inputs?: string;
  speculative?: boolean;
  shell?: boolean;
  wait?: boolean;
}

export const jobCommands: CommandModule = {
  register(program, ctl) {
    program
      .command('submit')
      .description('submit a job: one task, or one task per row of a params file with {column} substituted; prints the job id')
      .argument('<command...>', 'the command and its arguments (after --)')
      .option(
        '-p, --params <file>',
        "CSV with a header line, or JSON lines: one task per row, {name} in the command replaced by the row's name",
      )
      .addOption(
        new Option('--format <format>', 'format of the params file (default: from its extension, else csv)').choices(['csv', 'jsonl']),
      )
      .option('--name <name>', 'a name for the job')
      .option('-t, --timeout <seconds>', 'kill a task after this long, and retry it (1 s to 30 days; default 3600)')
      .option('--priority <n>', 'higher runs first (default 0)')
      .option('--attempts <n>', 'hand-outs per task before it counts as failed (default 3)')
      .option(
        '--retries <n>',
        'run a task that exits non-zero again, up to n more times, each on a node it has not failed on (it waits for one; default 0)',
      )
      .option('-l, --label <label>', 'run only on nodes with this label (repeatable)', collect, [])
      .option('--min-cores <n>', 'run only on nodes with at least this many cores')
      .option('--min-mem <MiB>', 'run only on nodes with at least this much memory')
      .option('--image <name>', 'run only on nodes that booted this image (`dispatcherctl images`)')
      .option('--cores <n>', 'cores each task takes while it runs (default 1); held to it where the node enforces it')
      .option('--mem <size>', 'memory each task may use, e.g. 512M or 2G; a task past it is killed (outcome oom)')
      .option('--gpus <n>', "GPUs each task takes, counted against the node's")
      .option('-e, --env <K=V>', 'environment variable for the task (repeatable; {name} substituted)', collect, [])
      .option('--cwd <dir>', "working directory, relative to the task's work dir")
      .option('--stdin <file>', "feed this file to each task's stdin")
      .option('--inputs <dir|tar>', "files unpacked into each task's work dir: a directory or a .tar")
      .option('--no-speculative', 'never run a second copy of a slow task')
      .option('--shell', 'run the command as one /bin/sh -c string (its words joined by spaces)')
      .option('-w, --wait', 'show progress until the job is done; exit 1 if tasks failed')
      .addHelpText(
        'after',
        `
Examples:
  dispatcherctl submit -- ./simulate --seed 42
  dispatcherctl submit --params sweep.csv --timeout 600 -- ./simulate --alpha {alpha} --seed {seed}
  dispatcherctl submit --shell --inputs ./data --wait -- 'sort data/in.txt > out/sorted.txt'
  JOB=$(dispatcherctl submit --params p.jsonl -- run {x}) && dispatcherctl results $JOB > results.csv

Files a task writes under out/ come back with its result (dispatcherctl results JOB --outputs out.tar).
A line "PROGRESS 0.42" printed by a task is shown as its progress.`,
      )
      .action(ctl.action(async (ctx, command: string[], opts: SubmitOpts) => submit(ctx, command, opts)));

    program
      .command('jobs')
      .description('list jobs, newest first: state and progress counts')
      .addOption(new Option('--state <state>', 'only jobs in this state').choices(['active', 'done', 'cancelled']))
      .option('--limit <n>', 'at most this many (default 50)', '50')
      .action(
        ctl.action(async (ctx, opts: { state?: string; limit: string }) => {
          const r = await ctx.api.get<{ jobs: JobView[] }>('/api/v1/jobs', {
            state: opts.state,
            limit: positiveInt(opts.limit, '--limit'),
          });
          ctx.print(r, (x) => (x.jobs.length ? jobTable(x.jobs, ctx.now()) : 'no jobs yet: dispatcherctl submit -- CMD\n'));
        }),
      );

    program
      .command('tasks')
      .description('list tasks (of one job, or of every job): state, attempts, node, exit code, duration')
      .argument('[job]', 'job id')
      .addOption(new Option('--state <state>', 'only tasks in this state').choices([...TASK_STATES]))
      .option('--limit <n>', 'at most this many (default 100)', '100')
      .option('--after <id>', 'tasks after this task id (paging)')
      .action(
        ctl.action(async (ctx, job: string | undefined, opts: { state?: string; limit: string; after?: string }) => {
          const path = job === undefined ? '/api/v1/tasks' : `/api/v1/jobs/${positiveInt(job, 'job id')}/tasks`;
          const r = await ctx.api.get<{ tasks: TaskSummary[]; nextAfterId: number | null }>(path, {
            state: opts.state,
            limit: positiveInt(opts.limit, '--limit'),
            after: opts.after === undefined ? undefined : positiveInt(opts.after, '--after'),
          });
          ctx.print(r, (x) =>
            x.tasks.length
              ? taskTable(x.tasks) + (x.nextAfterId !== null ? `(more: --after ${x.nextAfterId})\n` : '')
              : `no ${opts.state ?? ''} tasks\n`.replace('  ', ' '),
          );
        }),
      );

    program
      .command('task')
      .description('show one task: command, state, copies running, result with its output, failed attempts')
      .argument('<id>', 'task id')
      .action(
        ctl.action(async (ctx, id: string) => {
          const t = await ctx.api.get<TaskDetail>(`/api/v1/tasks/${positiveInt(id, 'task id')}`);
          ctx.print(t, (x) => taskDetail(x, ctx.now()));
        }),
      );

    program
      .command('results')
      .description("a job's results, one line per task, on stdout (CSV, or JSON lines with --json); its output files as a tar")
      .argument('<job>', 'job id')
      .addOption(new Option('--format <format>', 'csv (default) or jsonl').choices(['csv', 'jsonl']))
      .option('-o, --output <file>', 'write the results to this file instead of stdout')
      .option('--outputs <file.tar>', 'also save the files the tasks returned, as one tar (task-<id>/...)')
      .action(
        ctl.action(async (ctx, job: string, opts: { format?: 'csv' | 'jsonl'; output?: string; outputs?: string }) => {
          const id = positiveInt(job, 'job id');
          const format = opts.format ?? (ctx.json ? 'jsonl' : 'csv');
          const res = await raw(ctx, 'GET', `/api/v1/jobs/${id}/results?format=${format}`);
          if (opts.output) await pipeline(webBody(res), createWriteStream(opts.output));
          else for await (const chunk of webBody(res)) ctx.write('stdout', String(chunk));
          if (opts.outputs) {
            const tarRes = await raw(ctx, 'GET', `/api/v1/jobs/${id}/outputs.tar`);
            await pipeline(webBody(tarRes), createWriteStream(opts.outputs));
            ctx.err(`outputs: ${opts.outputs} (${formatBytes(statSync(opts.outputs).size)})`);
          }
        }),
      );

    program
      .command('cancel')
      .description('cancel a job (queued tasks dropped, running ones stopped), or one task with --task')
      .argument('[job]', 'job id')
      .option('--task <id>', 'cancel this task only')
      .action(
        ctl.action(async (ctx, job: string | undefined, opts: { task?: string }) => {
          if ((job === undefined) === (opts.task === undefined))
            throw usageError('give a job id, or --task ID', 'dispatcherctl cancel 12   or   dispatcherctl cancel --task 3401');
          if (opts.task !== undefined) {
            const t = await ctx.api.post<TaskDetail>(`/api/v1/tasks/${positiveInt(opts.task, '--task')}/cancel`);
            ctx.print(t, (x) => `task ${x.id}: ${x.state}\n`);
          } else {
            const j = await ctx.api.post<JobView>(`/api/v1/jobs/${positiveInt(job!, 'job id')}/cancel`);
            ctx.print(
              j,
              (x) => `job ${x.id}: ${x.state} (${x.counts.done} done, ${x.counts.failed} failed, ${x.counts.cancelled} cancelled)\n`,
            );
          }
        }),
      );
  },
};

// ---------------------------------------------------------------------------------- submit

async function submit(ctx: CtlContext, words: string[], opts: SubmitOpts): Promise<number> {
  if (words.length === 0) throw usageError('no command to run', 'dispatcherctl submit [options] -- CMD ARGS...');
  const body: JobSubmission = { command: opts.shell ? words.join(' ') : words };
  if (opts.name !== undefined) body.name = opts.name;
  if (opts.timeout !== undefined) {
    body.timeoutSeconds = positiveNumber(opts.timeout, '--timeout');
    if (body.timeoutSeconds < MIN_TIMEOUT_SECONDS || body.timeoutSeconds > MAX_TIMEOUT_SECONDS)
      throw usageError(`--timeout ${opts.timeout}: must be between ${MIN_TIMEOUT_SECONDS} and ${MAX_TIMEOUT_SECONDS} seconds (30 days)`);
  }
  if (opts.priority !== undefined) body.priority = integer(opts.priority, '--priority');
  if (opts.attempts !== undefined) body.maxAttempts = positiveInt(opts.attempts, '--attempts');
  if (opts.retries !== undefined) body.retries = nonNegativeInt(opts.retries, '--retries');
  const req: NonNullable<JobSubmission['requirements']> = {};
  if (opts.label?.length) req.labels = opts.label;
  if (opts.minCores !== undefined) req.minCores = positiveInt(opts.minCores, '--min-cores');
  if (opts.minMem !== undefined) req.minMemoryMiB = positiveInt(opts.minMem, '--min-mem');
  if (opts.image !== undefined) req.image = opts.image;
  if (Object.keys(req).length) body.requirements = req;
  const res: NonNullable<JobSubmission['resources']> = {};
  if (opts.cores !== undefined) res.cores = positiveInt(opts.cores, '--cores');
  if (opts.mem !== undefined) {
    const mib = parseSizeMiB(opts.mem, '--mem');
    if (mib instanceof Error) throw usageError(mib.message);
    res.memoryMiB = mib;
  }
  if (opts.gpus !== undefined) {
    const n = Number(opts.gpus);
    if (opts.gpus.trim() === '' || !Number.isInteger(n) || n < 0)
      throw usageError(`--gpus: expected a whole number (0 or more), got "${opts.gpus}"`);
    res.gpus = n;
  }
  if (Object.keys(res).length) body.resources = res;
  if (opts.env?.length) {
    body.env = {};
    for (const kv of opts.env) {
      const eq = kv.indexOf('=');
      if (eq <= 0) throw usageError(`--env ${kv}: expected NAME=VALUE`);
      body.env[kv.slice(0, eq)] = kv.slice(eq + 1);
    }
  }
  if (opts.cwd !== undefined) body.cwd = opts.cwd;
  if (opts.stdin !== undefined) body.stdinB64 = readFileB64(opts.stdin, '--stdin');
  if (opts.speculative === false) body.speculative = false;
  if (opts.inputs !== undefined) body.inputs = await uploadInputs(ctx, opts.inputs);

  let job: JobView;
  if (opts.params !== undefined) {
    const format = opts.format ?? (/\.(jsonl|ndjson|json)$/i.test(opts.params) ? 'jsonl' : 'csv');
    try {
      statSync(opts.params);
    } catch (err) {
      throw usageError(
        `--params ${opts.params}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`,
      );
    }
    const file = createReadStream(opts.params);
    const stream = Readable.from(
      (async function* () {
        yield Buffer.from(JSON.stringify(body) + '\n');
        yield* file;
      })(),
    );
    const res = await raw(ctx, 'POST', `/api/v1/jobs?format=${format}`, { body: stream, contentType: SWEEP_CONTENT_TYPE });
    job = (await res.json()) as JobView;
  } else {
    job = await ctx.api.post<JobView>('/api/v1/jobs', body, { timeoutMs: 600_000 });
  }
  if (ctx.json && !opts.wait) {
    ctx.out(JSON.stringify(job, null, 2));
    return EXIT.OK;
  }
  if (!ctx.json) {
    ctx.out(String(job.id));
    ctx.err(`job ${job.id}: ${job.counts.total} task${job.counts.total === 1 ? '' : 's'} queued`);
  }
  if (!opts.wait) return EXIT.OK;
  const final = await waitForJob(ctx, job.id);
  if (ctx.json) ctx.out(JSON.stringify(final, null, 2));
  return final.counts.failed > 0 || final.state === 'cancelled' ? EXIT.FAILED : EXIT.OK;
}

/** Polls the job and draws a progress bar on stderr until it is over. */
async function waitForJob(ctx: CtlContext, id: number): Promise<JobView> {
  const tty = process.stderr.isTTY === true && !ctx.json;
  let lastLine = '';
  let lastPrint = 0;
  for (;;) {
    const j = await ctx.api.get<JobView>(`/api/v1/jobs/${id}`);
    const c = j.counts;
    const finished = c.done + c.failed + c.cancelled;
    const line = `${progressBar(finished / Math.max(1, c.total), 30)} ${finished}/${c.total}  done ${c.done}  failed ${c.failed}  running ${c.running}  queued ${c.queued}`;
    if (!ctx.json) {
      if (tty) ctx.write('stderr', `\r${line}\x1b[K`);
      else if (line !== lastLine && (ctx.now() - lastPrint > 2000 || j.state !== 'active')) {
        ctx.err(line);
        lastPrint = ctx.now();
      }
      lastLine = line;
    }
    if (j.state !== 'active') {
      if (tty) ctx.write('stderr', '\n');
      if (!ctx.json) ctx.err(`job ${id} ${j.state}: ${c.done} done, ${c.failed} failed${c.cancelled ? `, ${c.cancelled} cancelled` : ''}`);
      return j;
    }
    if (ctx.signal?.aborted) throw new CtlError('CTL_ABORTED', `interrupted; job ${id} goes on (dispatcherctl cancel ${id} stops it)`);
    await new Promise((r) => setTimeout(r, WAIT_POLL_MS));
  }
}

export function progressBar(fraction: number, width: number): string {
  const f = Math.min(1, Math.max(0, fraction));
  const full = Math.round(f * width);
  return `[${'#'.repeat(full)}${'-'.repeat(width - full)}] ${String(Math.floor(f * 100)).padStart(3)}%`;
}

/** Uploads a .tar as is, or a directory packed into one; returns the blob id. */
async function uploadInputs(ctx: CtlContext, path: string): Promise<string> {
  let st;
  try {
    st = statSync(path);
  } catch {
    throw usageError(`--inputs ${path}: no such file or directory`);
  }
  const body = st.isDirectory() ? packDir(path) : createReadStream(path);
  const res = await raw(ctx, 'POST', '/api/v1/blobs', { body, contentType: 'application/x-tar' });
  const blob = (await res.json()) as { id: string; bytes: number };
  if (!ctx.json) ctx.err(`inputs: ${formatBytes(blob.bytes)} uploaded`);
  return blob.id;
}

/** A tar of a directory's files (relative paths; symlinks kept as links). */
function packDir(dir: string): Readable {
  const pack = tar.pack();
  const walk = async (rel: string): Promise<void> => {
    for (const name of (await readdir(join(dir, rel))).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const full = join(dir, r);
      const st = await lstat(full);
      if (st.isDirectory()) {
        await entry(pack, { name: r, type: 'directory', mode: st.mode & 0o777, mtime: st.mtime });
        await walk(r);
      } else if (st.isSymbolicLink()) {
        await entry(pack, { name: r, type: 'symlink', linkname: await readlink(full), mtime: st.mtime });
      } else if (st.isFile()) {
        await new Promise<void>((resolve, reject) => {
          const sink = pack.entry({ name: r, size: st.size, mode: st.mode & 0o777, mtime: st.mtime }, (err) =>
            err ? reject(err) : resolve(),
          );
          createReadStream(full).on('error', reject).pipe(sink);
        });
      }
    }
  };
  walk('').then(
    () => pack.finalize(),
    (err: Error) => pack.destroy(err),
  );
  return Readable.from(pack);
}

function entry(pack: tar.Pack, header: Partial<tar.Header> & { name: string }): Promise<void> {
  return new Promise((resolve, reject) => pack.entry(header, (err) => (err ? reject(err) : resolve())));
}

function readFileB64(path: string, flag: string): string {
  try {
    return readFileSync(path).toString('base64');
  } catch (err) {
    throw usageError(`${flag} ${path}: ${(err as Error).message}`);
  }
}

// ---------------------------------------------------------------------------------- raw HTTP

/** A request whose body or answer is not JSON, with the API client's target, token and errors. */
async function raw(ctx: CtlContext, method: string, path: string, opts: { body?: Readable; contentType?: string } = {}): Promise<Response> {
  const target = ctx.api.target;
  const headers: Record<string, string> = {};
  if (target.token) headers.authorization = `Bearer ${target.token}`;
  if (opts.contentType) headers['content-type'] = opts.contentType;
  let res: Response;
  try {
    res = await fetch(new URL(path, target.url), {
      method,
      headers,
      body: opts.body ? (Readable.toWeb(opts.body) as unknown as RequestInit['body']) : undefined,
      ...(opts.body ? { duplex: 'half' } : {}),
      signal: ctx.signal ?? null,
    } as RequestInit);
  } catch (err) {
    const e = err as Error & { cause?: { code?: string; message?: string } };
    if (e.name === 'AbortError') throw new CtlError('CTL_ABORTED', 'interrupted', { cause: err });
    throw new CtlError(
      'CTL_UNREACHABLE',
      `cannot reach the dispatcher at ${target.url} (${e.cause?.code ?? e.cause?.message ?? e.message})`,
      {
        exitCode: EXIT.UNREACHABLE,
        hint: 'is the dispatcher running? Point at it with --url URL or LILCLUSTER_URL (default http://127.0.0.1:8080)',
        cause: err,
      },
    );
  }
  if (res.ok) return res;
  let code = `HTTP_${res.status}`;
  let message = `${method} ${path.split('?')[0]}: ${res.status} ${res.statusText}`;
  let hint: string | undefined;
  try {
    const b = (await res.json()) as { error?: { code?: string; message?: string; hint?: string } };
    if (b.error?.message) ({ code = code, message, hint } = { code: b.error.code, message: b.error.message, hint: b.error.hint });
  } catch {
    /* not a JSON error body */
  }
  if (res.status === 401)
    hint = target.token
      ? `the token from ${target.tokenSource} was refused; the right one is in <data-dir>/admin.token on the dispatcher`
      : `no admin token (${target.tokenSource}): pass --token TOKEN, set LILCLUSTER_TOKEN, or run where <data-dir>/admin.token is readable`;
  throw new CtlError(code, message, {
    exitCode: res.status === 401 ? EXIT.UNAUTHORIZED : EXIT.FAILED,
    status: res.status,
    ...(hint ? { hint } : {}),
  });
}

function webBody(res: Response): Readable {
  if (!res.body) return Readable.from([]);
  return Readable.fromWeb(res.body as Parameters<typeof Readable.fromWeb>[0]);
}

// ---------------------------------------------------------------------------------- output

function jobTable(jobs: readonly JobView[], now: number): string {
  const cols: Column<JobView>[] = [
    { header: 'ID', value: (j) => j.id, right: true },
    { header: 'NAME', value: (j) => j.name },
    { header: 'STATE', value: (j) => j.state },
    { header: 'TASKS', value: (j) => j.counts.total, right: true },
    { header: 'DONE', value: (j) => j.counts.done, right: true },
    { header: 'FAILED', value: (j) => j.counts.failed, right: true },
    { header: 'RUNNING', value: (j) => j.counts.running, right: true },
    { header: 'QUEUED', value: (j) => j.counts.queued, right: true },
    { header: 'PRIO', value: (j) => j.priority, right: true },
    { header: 'SUBMITTED', value: (j) => formatTime(j.submittedAt, now) },
    { header: 'COMMAND', value: (j) => clip(commandText(j.command), 50) },
  ];
  return table(jobs, cols);
}

function taskTable(tasks: readonly TaskSummary[]): string {
  const cols: Column<TaskSummary>[] = [
    { header: 'ID', value: (t) => t.id, right: true },
    { header: 'JOB', value: (t) => t.jobId, right: true },
    { header: 'INDEX', value: (t) => t.index, right: true },
    { header: 'STATE', value: (t) => t.state + (t.progress !== null && t.state === 'running' ? ` ${Math.round(t.progress * 100)}%` : '') },
    { header: 'ATTEMPTS', value: (t) => t.attempts || null, right: true },
    { header: 'NODE', value: (t) => t.nodes.join(',') },
    { header: 'FAILED ON', value: (t) => t.failedOn?.join(',') ?? null },
    { header: 'EXIT', value: (t) => t.exitCode, right: true },
    { header: 'DURATION', value: (t) => formatMs(t.durationMs) },
    {
      header: 'PARAMS',
      value: (t) =>
        t.params
          ? clip(
              Object.entries(t.params)
                .map(([k, v]) => `${k}=${v}`)
                .join(' '),
              50,
            )
          : null,
    },
  ];
  return table(tasks, cols);
}

function taskDetail(t: TaskDetail, now: number): string {
  const r = t.result;
  let out = keyValues([
    ['task', t.id],
    ['job', `${t.jobId} (index ${t.index})`],
    ['state', t.state + (t.progress !== null ? ` (${Math.round(t.progress * 100)}%)` : '')],
    ['command', commandText(t.command)],
    [
      'params',
      t.params
        ? Object.entries(t.params)
            .map(([k, v]) => `${k}=${v}`)
            .join(' ')
        : null,
    ],
    ['cwd', t.cwd],
    [
      'env',
      Object.keys(t.env).length
        ? Object.entries(t.env)
            .map(([k, v]) => `${k}=${v}`)
            .join(' ')
        : null,
    ],
    ['timeout', formatDuration(t.timeoutSeconds * 1000)],
    ['attempts', `${t.attempts} of ${t.maxAttempts}${t.retries ? ` (+${t.retries} retries of a non-zero exit, on other nodes)` : ''}`],
    ['failed on', t.failedOn?.length ? `${t.failedOn.join(', ')}${t.state === 'queued' ? ' (it waits for another node)' : ''}` : null],
    ...t.copies.map((c): [string, string] => [
      `running`,
      `attempt ${c.attempt} on ${c.mac}${c.speculative ? ' (speculative copy)' : ''} since ${formatTime(c.startedAt, now)}`,
    ]),
    ...t.failures.map((f): [string, string] => [`attempt ${f.attempt}`, `${f.reason}${f.mac ? ` on ${f.mac}` : ''}`]),
  ]);
  if (r) {
    out += keyValues([
      ['exit', r.exitCode !== null ? r.exitCode : r.signal ? `killed by ${r.signal}` : null],
      ['error', r.error],
      ['timed out', r.timedOut ? 'yes' : null],
      ['outcome', r.oom ? 'oom: killed for exceeding its memory request (--mem)' : null],
      ['peak memory', typeof r.memPeakKiB === 'number' ? formatBytes(r.memPeakKiB * 1024) : null],
      ['node', r.mac],
      ['duration', formatMs(r.durationMs)],
      ['max rss', r.maxRssKiB !== null ? formatBytes(r.maxRssKiB * 1024) : null],
      ['outputs', r.outputsBytes ? formatBytes(r.outputsBytes) : null],
    ]);
    if (r.stdout) out += `--- stdout${r.stdoutTruncated ? ' (truncated)' : ''}\n${r.stdout}${r.stdout.endsWith('\n') ? '' : '\n'}`;
    if (r.stderr) out += `--- stderr${r.stderrTruncated ? ' (truncated)' : ''}\n${r.stderr}${r.stderr.endsWith('\n') ? '' : '\n'}`;
  }
  return out;
}

function clip(s: string, n: number): string {
  return s.length > n ? s.slice(0, n - 1) + '…' : s;
}

// ---------------------------------------------------------------------------------- arguments

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function positiveInt(v: string, what: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw usageError(`${what}: expected a positive integer, got "${v}"`);
  return n;
}

function nonNegativeInt(v: string, what: string): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isInteger(n) || n < 0) throw usageError(`${what}: expected a whole number (0 or more), got "${v}"`);
  return n;
}

function integer(v: string, what: string): number {
  const n = Number(v);
  if (!Number.isInteger(n)) throw usageError(`${what}: expected an integer, got "${v}"`);
  return n;
}

function positiveNumber(v: string, what: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw usageError(`${what}: expected a positive number of seconds, got "${v}"`);
  return n;
}
