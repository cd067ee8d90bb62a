/**
 * The jobs API's schemas (TypeBox): what a submission looks like, what /api/v1/jobs and
 * /api/v1/tasks return. The routes (api/jobs/routes.ts), the engine and dispatcherctl share
 * these definitions, so the types, the validation and the OpenAPI docs come from one place.
 * The engine's own normalised forms (JobSpec...) live in dispatch/model.ts.
 *
 * A job is a template task plus, optionally, one task per row of parameters (the sweep:
 * `{name}` in the command, env values, cwd and stdin is replaced by the row's `name`) or an
 * explicit list of per-task overrides. Scheduling attributes (priority, timeout, attempts,
 * requirements, speculation) belong to the job and hold for each of its tasks.
 */
import { Type, type Static } from '@sinclair/typebox';

/** Defaults, each overridable per job in the submission. */
export const DEFAULT_TIMEOUT_SECONDS = 3600;
export const DEFAULT_MAX_ATTEMPTS = 3;
export const DEFAULT_PRIORITY = 0;
/** Bounds that keep one submission from hurting the dispatcher. */
/** Shortest task timeout: an agent needs whole milliseconds, and a sub-second timeout is a typo. */
export const MIN_TIMEOUT_SECONDS = 1;
export const MAX_TIMEOUT_SECONDS = 30 * 24 * 3600;
export const MAX_ATTEMPTS_LIMIT = 100;
/** Most retries of a task that exits non-zero (each on another node). */
export const MAX_RETRIES = 100;
export const MAX_PRIORITY = 1_000_000;
export const MAX_TASKS_PER_JOB = 10_000_000;
export const MAX_STDIN_BYTES = 1024 * 1024;

export const ENV_NAME_PATTERN = '^[A-Za-z_][A-Za-z0-9_]*$';
export const LABEL_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._:-]{0,62}$';
/** images/catalog.ts IMAGE_NAME_RE, as a schema pattern. */
export const IMAGE_NAME_PATTERN = '^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$';
export const SHA256_PATTERN = '^[0-9a-f]{64}$';

/** Content-type of a streamed sweep submission (POST /api/v1/jobs): the JobSubmission's line, then the params file. */
export const SWEEP_CONTENT_TYPE = 'application/x-lilcluster-sweep';

/** argv (run directly, argv[0] looked up in PATH) or a shell string (run by /bin/sh -c). */
export const CommandSchema = Type.Union(
  [Type.Array(Type.String({ maxLength: 65536 }), { minItems: 1, maxItems: 4096 }), Type.String({ minLength: 1, maxLength: 262144 })],
  {
    description: 'argv array, or a shell string run by /bin/sh -c',
  },
);
export type Command = Static<typeof CommandSchema>;

export const EnvSchema = Type.Record(Type.String({ pattern: ENV_NAME_PATTERN }), Type.String({ maxLength: 65536 }), {
  description: 'extra environment variables',
});

export const RequirementsSchema = Type.Object(
  {
    labels: Type.Optional(
      Type.Array(Type.String({ pattern: LABEL_PATTERN }), { maxItems: 64, description: 'the node must carry every one of these labels' }),
    ),
    minCores: Type.Optional(Type.Integer({ minimum: 1, maximum: 65536 })),
    minMemoryMiB: Type.Optional(Type.Integer({ minimum: 1, maximum: 1 << 30 })),
    image: Type.Optional(
      Type.String({
        pattern: IMAGE_NAME_PATTERN,
        maxLength: 64,
        description: 'only nodes that booted this image (`dispatcherctl images`)',
      }),
    ),
  },
  { additionalProperties: false },
);
export type Requirements = Static<typeof RequirementsSchema>;

/** Largest request a submission may make (a node's inventory is checked at submission too). */
export const MAX_REQUEST_CORES = 65536;
export const MAX_REQUEST_MEMORY_MIB = 1 << 30;
export const MAX_REQUEST_GPUS = 1024;

/** What each task takes while it runs; the node's agent enforces it (cgroup v2) where it can. */
export const ResourcesSchema = Type.Object(
  {
    cores: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_REQUEST_CORES, description: 'cores per task (default 1)' })),
    memoryMiB: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: MAX_REQUEST_MEMORY_MIB,
        description: 'memory per task, MiB: its limit (default: no reservation)',
      }),
    ),
    gpus: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_REQUEST_GPUS, description: "GPUs per task, counted against the node's" })),
  },
  { additionalProperties: false },
);
export type ResourcesRequest = Static<typeof ResourcesSchema>;

const taskFields = {
  command: CommandSchema,
  env: Type.Optional(EnvSchema),
  cwd: Type.Optional(
    Type.Union([Type.String({ minLength: 1, maxLength: 4096, description: "relative to the task's work dir" }), Type.Null()]),
  ),
  stdin: Type.Optional(Type.String({ maxLength: MAX_STDIN_BYTES, description: 'text fed to stdin ({name} substituted)' })),
  stdinB64: Type.Optional(
    Type.String({ maxLength: Math.ceil(MAX_STDIN_BYTES / 3) * 4, description: 'bytes fed to stdin, base64 (not substituted)' }),
  ),
};

/** Per-task overrides of the template (the `tasks` list of a submission). */
export const TaskOverrideSchema = Type.Object(
  {
    command: Type.Optional(taskFields.command),
    env: taskFields.env,
    cwd: taskFields.cwd,
    stdin: taskFields.stdin,
    stdinB64: taskFields.stdinB64,
  },
  { additionalProperties: false },
);
export type TaskOverride = Static<typeof TaskOverrideSchema>;

export const ParamValueSchema = Type.Union([Type.String({ maxLength: 65536 }), Type.Number(), Type.Boolean()]);
export const ParamsRowSchema = Type.Record(Type.String({ minLength: 1, maxLength: 128 }), ParamValueSchema);
export type ParamsRow = Static<typeof ParamsRowSchema>;

export const JobSubmissionSchema = Type.Object(
  {
    name: Type.Optional(Type.String({ maxLength: 200 })),
    ...taskFields,
    timeoutSeconds: Type.Optional(
      Type.Number({
        minimum: MIN_TIMEOUT_SECONDS,
        maximum: MAX_TIMEOUT_SECONDS,
        description: `seconds, ${MIN_TIMEOUT_SECONDS} to ${MAX_TIMEOUT_SECONDS} (30 days); default ${DEFAULT_TIMEOUT_SECONDS}`,
      }),
    ),
    priority: Type.Optional(
      Type.Integer({ minimum: -MAX_PRIORITY, maximum: MAX_PRIORITY, description: `higher first; default ${DEFAULT_PRIORITY}` }),
    ),
    maxAttempts: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_ATTEMPTS_LIMIT, description: `default ${DEFAULT_MAX_ATTEMPTS}` })),
    retries: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: MAX_RETRIES,
        description:
          'attempts more for a task that exits non-zero, each on a node it has not failed on; it waits for such a node (default 0)',
      }),
    ),
    requirements: Type.Optional(RequirementsSchema),
    resources: Type.Optional(ResourcesSchema),
    speculative: Type.Optional(Type.Boolean({ description: 'second copy of laggers (default true)' })),
    inputs: Type.Optional(
      Type.String({ pattern: SHA256_PATTERN, description: 'id of an uploaded tar (POST /api/v1/blobs), unpacked into each work dir' }),
    ),
    params: Type.Optional(Type.Array(ParamsRowSchema, { description: 'one task per row, {name} substituted' })),
    tasks: Type.Optional(Type.Array(TaskOverrideSchema, { minItems: 1, description: 'one task per entry, each overriding the template' })),
  },
  { additionalProperties: false },
);
export type JobSubmission = Static<typeof JobSubmissionSchema>;

/** A task's states, in the order the page and `dispatcherctl status` show them. */
export const TASK_STATES = ['queued', 'running', 'done', 'failed', 'cancelled'] as const;
export type TaskState = (typeof TASK_STATES)[number];
export const TaskStateSchema = Type.Union(TASK_STATES.map((s) => Type.Literal(s)));

export const JOB_STATES = ['active', 'done', 'cancelled'] as const;
export type JobState = (typeof JOB_STATES)[number];

export const JobCountsSchema = Type.Object({
  total: Type.Integer(),
  queued: Type.Integer(),
  running: Type.Integer(),
  done: Type.Integer(),
  failed: Type.Integer(),
  cancelled: Type.Integer(),
});
export type JobCounts = Static<typeof JobCountsSchema>;

export const JobViewSchema = Type.Object({
  id: Type.Integer(),
  name: Type.Union([Type.String(), Type.Null()]),
  state: Type.Union(JOB_STATES.map((s) => Type.Literal(s))),
  submittedAt: Type.Integer({ description: 'unix ms' }),
  finishedAt: Type.Union([Type.Integer(), Type.Null()]),
  priority: Type.Integer(),
  timeoutSeconds: Type.Number(),
  maxAttempts: Type.Integer(),
  retries: Type.Optional(Type.Integer({ description: 'attempts more for a task that exits non-zero, on other nodes' })),
  speculative: Type.Boolean(),
  requirements: Type.Object({
    labels: Type.Array(Type.String()),
    minCores: Type.Integer(),
    minMemoryMiB: Type.Integer(),
    image: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  }),
  resources: Type.Optional(
    Type.Union([Type.Object({ cores: Type.Integer(), memoryMiB: Type.Integer(), gpus: Type.Integer() }), Type.Null()], {
      description: 'what each task takes while it runs; null: 1 core, no memory reservation',
    }),
  ),
  command: CommandSchema,
  columns: Type.Union([Type.Array(Type.String()), Type.Null()]),
  firstTaskId: Type.Integer(),
  counts: JobCountsSchema,
});
export type JobView = Static<typeof JobViewSchema>;

export const CopyViewSchema = Type.Object({
  attempt: Type.Integer(),
  mac: Type.String(),
  startedAt: Type.Integer(),
  leaseUntil: Type.Integer(),
  progress: Type.Union([Type.Number(), Type.Null()]),
  speculative: Type.Boolean(),
});

export const ResultViewSchema = Type.Object({
  attempt: Type.Integer(),
  mac: Type.Union([Type.String(), Type.Null()]),
  exitCode: Type.Union([Type.Integer(), Type.Null()]),
  signal: Type.Union([Type.String(), Type.Null()]),
  timedOut: Type.Boolean(),
  error: Type.Union([Type.String(), Type.Null()]),
  startedAt: Type.Union([Type.Integer(), Type.Null()]),
  durationMs: Type.Union([Type.Number(), Type.Null()]),
  maxRssKiB: Type.Union([Type.Integer(), Type.Null()]),
  oom: Type.Optional(Type.Boolean({ description: 'killed for exceeding its memory request (outcome oom)' })),
  memPeakKiB: Type.Optional(Type.Union([Type.Integer(), Type.Null()], { description: "its cgroup's peak memory" })),
  stdout: Type.String(),
  stderr: Type.String(),
  stdoutTruncated: Type.Boolean(),
  stderrTruncated: Type.Boolean(),
  outputsBytes: Type.Integer({ description: 'size of the gzip-compressed outputs tar, 0 if none' }),
  recordedAt: Type.Integer(),
});
export type ResultView = Static<typeof ResultViewSchema>;

export const AttemptFailureSchema = Type.Object({
  attempt: Type.Integer(),
  mac: Type.Union([Type.String(), Type.Null()]),
  reason: Type.String(),
  at: Type.Integer(),
  exitCode: Type.Optional(Type.Union([Type.Integer(), Type.Null()], { description: 'a non-zero exit retried on another node' })),
});
export type AttemptFailure = Static<typeof AttemptFailureSchema>;

export const TaskSummarySchema = Type.Object({
  id: Type.Integer(),
  jobId: Type.Integer(),
  index: Type.Integer({ description: 'position in its job, from 0' }),
  state: TaskStateSchema,
  attempts: Type.Integer({ description: 'hand-outs so far' }),
  params: Type.Union([Type.Record(Type.String(), Type.String()), Type.Null()]),
  exitCode: Type.Union([Type.Integer(), Type.Null()]),
  durationMs: Type.Union([Type.Number(), Type.Null()]),
  progress: Type.Union([Type.Number(), Type.Null()]),
  nodes: Type.Array(Type.String(), { description: 'MACs running it now' }),
  failedOn: Type.Optional(
    Type.Array(Type.String(), { description: 'MACs of nodes it exited non-zero on, which its retries avoid (while it is not finished)' }),
  ),
  ranOn: Type.Optional(Type.Union([Type.String(), Type.Null()], { description: 'MAC of the copy whose result was recorded' })),
});
export type TaskSummary = Static<typeof TaskSummarySchema>;

export const TaskDetailSchema = Type.Intersect([
  TaskSummarySchema,
  Type.Object({
    command: CommandSchema,
    env: Type.Record(Type.String(), Type.String()),
    cwd: Type.Union([Type.String(), Type.Null()]),
    timeoutSeconds: Type.Number(),
    maxAttempts: Type.Integer(),
    retries: Type.Optional(Type.Integer()),
    copies: Type.Array(CopyViewSchema),
    result: Type.Union([ResultViewSchema, Type.Null()]),
    failures: Type.Array(AttemptFailureSchema),
  }),
]);
export type TaskDetail = Static<typeof TaskDetailSchema>;

/**
 * Memory sizes as people write them (`--mem 512M`, `2G`, `1.5GiB`). Units are binary (K = 1024
 * bytes) and required: a bare number is refused rather than guessed at (MiB? bytes?).
 */
const UNITS: Record<string, number> = { K: 1 / 1024, M: 1, G: 1024, T: 1024 * 1024 };
const SIZE_RE = /^(\d{1,12}(?:\.\d{1,6})?)([KMGT])(?:i?B)?$/i;

/** A size in MiB (rounded up to a whole MiB), or an Error whose message says what is wrong and names `what`. */
export function parseSizeMiB(text: string, what: string): number | Error {
  const t = text.trim();
  const m = SIZE_RE.exec(t);
  if (!m)
    return new Error(`${what}: "${text}" is not a size; write a number and a unit, K, M, G or T (binary: 1G = 1024M), e.g. 512M or 2G`);
  const raw = Number(m[1]) * UNITS[m[2]!.toUpperCase()]!;
  if (!(raw >= 1)) return new Error(`${what}: "${text}" is less than 1M`);
  const mib = Math.ceil(raw);
  if (mib > 2 ** 30) return new Error(`${what}: "${text}" is more than 1024T`);
  return mib;
}

/** A short human form of a command, for lists (the page's and dispatcherctl's). */
export function commandText(cmd: Command): string {
  return typeof cmd === 'string' ? cmd : cmd.map((a) => (/^[\w@%+=:,./{}-]+$/.test(a) ? a : `'${a.replaceAll("'", `'\\''`)}'`)).join(' ');
}
