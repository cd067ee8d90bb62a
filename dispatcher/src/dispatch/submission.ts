/**
 * Validation of job submissions, before anything is queued: a malformed submission is
 * refused whole with a DSP_ERR_BAD_SUBMISSION message that names the field (and, for params
 * rows, the line). Pure: the caller owns the I/O (HTTP body, params file stream).
 */
import { Value } from '@sinclair/typebox/value';
import { DispatcherError } from '../errors.js';
import {
  DEFAULT_MAX_ATTEMPTS,
  DEFAULT_PRIORITY,
  DEFAULT_TIMEOUT_SECONDS,
  ENV_NAME_PATTERN,
  JobSubmissionSchema,
  MAX_TASKS_PER_JOB,
  MAX_TIMEOUT_SECONDS,
  MIN_TIMEOUT_SECONDS,
  type JobSubmission,
  type TaskOverride,
} from '../api/jobs/schemas.js';
import type { JobSpec, NormalRequirements, TaskTemplate } from './model.js';
import { DEFAULT_TASK_RESOURCES } from '../protocol/messages.js';
import { templatePlaceholders } from './template.js';
import type { ParamsFileError } from './params-file.js';

/** How the tasks of a validated submission are given. */
export type SubmissionTasks =
  | { kind: 'single' }
  /** Inline sweep rows, values as strings. */
  | { kind: 'params'; rows: Record<string, string>[] }
  | { kind: 'overrides'; overrides: TaskOverride[] }
  /** The rows follow in a params file (streamed sweep submission). */
  | { kind: 'stream' };

export interface ValidatedSubmission {
  spec: JobSpec;
  tasks: SubmissionTasks;
}

export function badSubmission(message: string, cause?: unknown): DispatcherError {
  return new DispatcherError('DSP_ERR_BAD_SUBMISSION', message, {
    hint: 'see `dispatcherctl submit --help` or POST /api/v1/jobs in dispatcher/README.md',
    ...(cause === undefined ? {} : { cause }),
  });
}

/** A params-file error as the user should read it. */
export function paramsFileProblem(err: ParamsFileError): DispatcherError {
  return badSubmission(`params line ${err.line}${err.column ? `, column "${err.column}"` : ''}: ${err.message}`, err);
}

const ENV_NAME_RE = new RegExp(ENV_NAME_PATTERN);

/**
 * Checks a submission body. `streamed`: the params rows follow in a file, so the body must not
 * carry `params` or `tasks` itself.
 */
export function validateSubmission(body: unknown, opts: { streamed?: boolean } = {}): ValidatedSubmission {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badSubmission('the submission must be a JSON object');
  const b = body as Record<string, unknown>;
  checkCommand(b.command, 'command');
  checkTimeout(b.timeoutSeconds);
  if (Array.isArray(b.tasks))
    b.tasks.forEach(
      (t, i) => t && typeof t === 'object' && 'command' in t && checkCommand((t as { command: unknown }).command, `tasks[${i}].command`),
    );
  const first = Value.Errors(JobSubmissionSchema, body).First();
  if (first) throw badSubmission(describe(first.path, first.message, first.value));
  const s = body as JobSubmission;

  checkEnv(s.env, 'env');
  checkCwd(s.cwd, 'cwd');
  s.params?.forEach((row, i) => checkParamsRow(row, `params[${i}]`));
  checkStdin(s.stdin, s.stdinB64, '');
  if (s.params !== undefined && s.tasks !== undefined)
    throw badSubmission('give either "params" (a sweep) or "tasks" (explicit tasks), not both');
  if (opts.streamed && (s.params !== undefined || s.tasks !== undefined))
    throw badSubmission('a submission streamed with a params file must not carry "params" or "tasks" itself');
  s.tasks?.forEach((t, i) => {
    checkEnv(t.env, `tasks[${i}].env`);
    checkCwd(t.cwd, `tasks[${i}].cwd`);
    checkStdin(t.stdin, t.stdinB64, `tasks[${i}].`);
  });
  const count = s.params?.length ?? s.tasks?.length ?? 1;
  if (count > MAX_TASKS_PER_JOB) throw badSubmission(`${count} tasks in one job; at most ${MAX_TASKS_PER_JOB}`);
  if (s.params !== undefined && s.params.length === 0)
    throw badSubmission('params: empty list (give at least one row, or leave params out)');

  const template: TaskTemplate = {
    command: s.command,
    env: s.env ?? {},
    cwd: s.cwd ?? null,
    stdin: s.stdin ?? null,
    stdinB64: s.stdinB64 ?? null,
  };
  const sweep = opts.streamed || s.params !== undefined;
  const placeholders = sweep ? templatePlaceholders(template) : [];
  let tasks: SubmissionTasks = { kind: 'single' };
  let columns: string[] | null = null;
  if (s.params) {
    const rows: Record<string, string>[] = new Array(s.params.length);
    const cols = new Set<string>();
    s.params.forEach((row, i) => {
      const values: Record<string, string> = {};
      for (const [k, v] of Object.entries(row)) {
        values[k] = String(v);
        cols.add(k);
      }
      for (const p of placeholders)
        if (!(p in values)) throw badSubmission(`params[${i}] (row ${i + 1}): missing field "${p}" (the command uses {${p}})`);
      rows[i] = values;
    });
    tasks = { kind: 'params', rows };
    columns = [...cols];
  } else if (s.tasks) tasks = { kind: 'overrides', overrides: s.tasks };
  else if (opts.streamed) tasks = { kind: 'stream' };

  const requirements: NormalRequirements = {
    labels: [...new Set(s.requirements?.labels ?? [])].sort(),
    minCores: s.requirements?.minCores ?? 0,
    minMemoryMiB: s.requirements?.minMemoryMiB ?? 0,
    image: s.requirements?.image ?? null,
  };
  if (s.resources)
    requirements.request = {
      cores: s.resources.cores ?? DEFAULT_TASK_RESOURCES.cores,
      memMiB: s.resources.memoryMiB ?? 0,
      gpus: s.resources.gpus ?? 0,
    };
  const spec: JobSpec = {
    name: s.name ?? null,
    template,
    timeoutSeconds: s.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS,
    priority: s.priority ?? DEFAULT_PRIORITY,
    maxAttempts: s.maxAttempts ?? DEFAULT_MAX_ATTEMPTS,
    retries: s.retries ?? 0,
    requirements,
    speculative: s.speculative ?? true,
    inputs: s.inputs ?? null,
    placeholders,
    columns,
    taskData: sweep ? 'params' : s.tasks ? 'overrides' : 'none',
  };
  return { spec, tasks };
}

/** The command gets its own messages: "empty command" is the mistake people make. */
function checkCommand(cmd: unknown, field: string): void {
  if (cmd === undefined) {
    if (field === 'command') throw badSubmission('command: missing (an argv array such as ["echo", "hi"], or a shell string)');
    return;
  }
  if (typeof cmd === 'string') {
    if (cmd.trim() === '') throw badSubmission(`${field}: empty command`);
    checkNoNul(cmd, field);
    return;
  }
  if (!Array.isArray(cmd)) throw badSubmission(`${field}: expected an argv array of strings or a shell string`);
  if (cmd.length === 0) throw badSubmission(`${field}: empty command (argv has no program)`);
  cmd.forEach((a, i) => {
    if (typeof a !== 'string') throw badSubmission(`${field}[${i}]: expected a string`);
    checkNoNul(a, `${field}[${i}]`);
  });
  if ((cmd[0] as string).trim() === '') throw badSubmission(`${field}[0]: empty program name`);
}

function checkEnv(env: Record<string, string> | undefined, field: string): void {
  if (!env) return;
  for (const [k, v] of Object.entries(env)) {
    checkNoNul(k, `${field} name ${JSON.stringify(k)}`);
    if (!ENV_NAME_RE.test(k)) throw badSubmission(`${field}.${k}: not a valid environment variable name`);
    checkNoNul(v, `${field}.${k}`);
  }
}

/**
 * Strings that become argv, environment or a path on the node cannot hold a NUL byte
 * (execve and open end them there): refused here, not by the agent after a hand-out.
 */
function checkNoNul(value: string, field: string): void {
  if (value.includes('\0')) throw badSubmission(`${field}: contains a NUL byte (not allowed in commands, environment, cwd or params)`);
}

function checkParamsRow(row: Record<string, unknown>, field: string): void {
  for (const [k, v] of Object.entries(row)) {
    checkNoNul(k, `${field} field name ${JSON.stringify(k)}`);
    if (typeof v === 'string') checkNoNul(v, `${field}.${k}`);
  }
}

/** Timeouts below MIN_TIMEOUT_SECONDS reach agents as 0 ms; above the maximum they hold a node for months. */
function checkTimeout(t: unknown): void {
  if (typeof t !== 'number') return; // absent, or the schema says what is wrong
  if (!(t >= MIN_TIMEOUT_SECONDS && t <= MAX_TIMEOUT_SECONDS))
    throw badSubmission(`timeoutSeconds: must be between ${MIN_TIMEOUT_SECONDS} and ${MAX_TIMEOUT_SECONDS} seconds (30 days), got ${t}`);
}

function checkCwd(cwd: string | null | undefined, field: string): void {
  if (cwd === undefined || cwd === null) return;
  if (cwd.startsWith('/')) throw badSubmission(`${field}: must be relative to the task's work dir, not absolute`);
  if (cwd.split('/').includes('..')) throw badSubmission(`${field}: must stay inside the task's work dir (no "..")`);
  checkNoNul(cwd, field);
}

function checkStdin(stdin: string | undefined, stdinB64: string | undefined, prefix: string): void {
  if (stdin !== undefined && stdinB64 !== undefined)
    throw badSubmission(`${prefix}stdin: give either stdin (text) or stdinB64 (bytes), not both`);
  if (stdinB64 !== undefined && !/^[A-Za-z0-9+/]*={0,2}$/.test(stdinB64)) throw badSubmission(`${prefix}stdinB64: not base64`);
}

function describe(path: string, message: string, value: unknown): string {
  const field = pathToField(path);
  if (message === 'Unexpected property') return `${field}: unknown field`;
  if (message === 'Expected required property') return `${field}: missing`;
  if (/^params\[\d+\]\./.test(field) && message === 'Expected union value') return `${field}: must be a string, a number or a boolean`;
  if (/(^|\.)cwd$/.test(field) && message === 'Expected union value') return `${field}: expected a relative path or null`;
  return `${field}: ${lowerFirst(message)}${value !== undefined && typeof value !== 'object' ? ` (got ${JSON.stringify(value)})` : ''}`;
}

/** `/params/3/x` → `params[3].x`. */
export function pathToField(path: string): string {
  let out = '';
  for (const part of path.split('/').slice(1)) {
    const p = part.replaceAll('~1', '/').replaceAll('~0', '~');
    out += /^\d+$/.test(p) ? `[${p}]` : out === '' ? p : `.${p}`;
  }
  return out || '(body)';
}

function lowerFirst(s: string): string {
  return s.charAt(0).toLowerCase() + s.slice(1);
}
