/**
 * The dispatcher/agent protocol: one closed set of typed messages per direction, schema
 * first (TypeBox). The codec (codec.ts) validates every message against these schemas on
 * arrival; both ends handle them with an exhaustive `switch` on `type`. The agent bundle
 * imports this folder, so it stays free of dispatcher internals (no store, no logger).
 *
 * Versioning: `PROTOCOL_VERSION` travels in `hello` and `welcome`. Objects are closed
 * (unknown fields are refused), so any change to a message is a new protocol version; the
 * dispatcher refuses an agent speaking another version with reason `protocol`.
 *
 * Batching is what makes the protocol fast: `tasks`, `results`, `ack`, `progress` and
 * `cancel` carry arrays, and `ready` asks for several tasks at once. One message, one
 * validation, one MAC — whatever the batch size. See dispatcher/README.md ("Agent protocol").
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';

export const PROTOCOL_VERSION = 3;

/** The WebSocket path of the agent endpoint on the dispatcher's HTTP port. */
export const AGENT_PATH = '/api/v1/agent';

/** Agents identify themselves with this User-Agent prefix (`lilcluster-node-agent/<version>`). */
export const AGENT_USER_AGENT_PREFIX = 'lilcluster-node-agent/';

/** Largest batch in one message (tasks, results, refs). Bigger batches are split by the sender. */
export const MAX_BATCH = 10_000;

/** At most this many undelivered result refs are listed in a hello (the rest are simply re-sent). */
export const MAX_UNDELIVERED_IN_HELLO = 100_000;

const Str = (maxLength: number) => Type.String({ maxLength });
const Int = (minimum = 0) => Type.Integer({ minimum });
const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);
const Closed = { additionalProperties: false } as const;

/** base64 of 32 bytes (an X25519 or Ed25519 key, a nonce). */
const B64Key = Type.String({ minLength: 43, maxLength: 44, pattern: '^[A-Za-z0-9+/]{43}=?$' });
const MacText = Type.String({ pattern: '^[0-9a-f]{2}(:[0-9a-f]{2}){5}$' });
const Fraction = Type.Number({ minimum: 0, maximum: 1 });

export const TaskRef = Type.Object({ taskId: Int(), attempt: Int(1) }, Closed);
export type TaskRef = Static<typeof TaskRef>;

/**
 * Cores, memory and GPUs: a task's request (`submit --cores --mem --gpus`), what an agent
 * allocates to tasks, or the part of it still free. A task without a request costs
 * DEFAULT_TASK_RESOURCES.
 */
export const Resources = Type.Object({ cores: Int(), memMiB: Int(), gpus: Int() }, Closed);
export type Resources = Static<typeof Resources>;
export const DEFAULT_TASK_RESOURCES: Readonly<Resources> = Object.freeze({ cores: 1, memMiB: 0, gpus: 0 });

/** What an agent hands out to tasks, and whether cgroups hold tasks to their requests. */
export const NodeResources = Type.Object({ cores: Int(1), memMiB: Int(), gpus: Int(), enforced: Type.Boolean() }, Closed);
export type NodeResources = Static<typeof NodeResources>;

/** A task as handed to an agent: everything it needs to run it (the engine hands these out, dispatch/contract.ts). */
export const TaskAssignment = Type.Object(
  {
    taskId: Int(),
    jobId: Int(),
    attempt: Int(1),
    command: Type.Union([Type.Array(Str(1 << 20), { minItems: 1, maxItems: 4096 }), Type.String({ minLength: 1, maxLength: 1 << 20 })]),
    env: Type.Record(Type.String({ maxLength: 4096 }), Str(1 << 20)),
    cwd: Nullable(Str(4096)),
    stdinB64: Nullable(Type.String()),
    inputsPath: Nullable(Str(4096)),
    /** sha256 (hex) of the inputs tar's bytes: the agent checks it before unpacking anything. */
    inputsSha256: Nullable(Type.String({ pattern: '^[0-9a-f]{64}$' })),
    timeoutMs: Int(1),
    /** The job's request; absent: DEFAULT_TASK_RESOURCES, no limit enforced. */
    resources: Type.Optional(Resources),
  },
  Closed,
);
export type TaskAssignment = Static<typeof TaskAssignment>;

/**
 * Text that may travel gzip-compressed: a plain string, or `{ gz }` (base64 of the gzip of
 * its UTF-8) when it is long enough for compression to pay (result compression, seeds/001).
 */
export const WireText = Type.Union([Type.String(), Type.Object({ gz: Type.String() }, Closed)]);
export type WireText = Static<typeof WireText>;

/** What an agent reports when a task ends, in the runner's form (plain texts); WireTaskResult is its wire form. */
export interface TaskResult {
  taskId: number;
  attempt: number;
  /** Exit code, or null when killed by a signal. */
  exitCode: number | null;
  signal: string | null;
  /** The agent killed it at its timeout. */
  timedOut: boolean;
  /** The runner could not start it (bad command, missing cwd...), with why. */
  error: string | null;
  startedAt: number;
  durationMs: number;
  maxRssKiB: number | null;
  stdout: string;
  stderr: string;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  /** Files the task wrote under out/, as a gzip-compressed tar, base64; null if none. */
  outputsTarGzB64: string | null;
  /** The kernel killed it for exceeding its memory request (its cgroup's memory.max). */
  oom?: boolean;
  /** Its cgroup's peak memory (memory.peak), when the agent ran it in one. */
  memPeakKiB?: number | null;
}

/** A task's result on the wire (TaskResult with stdout/stderr as WireText). */
export const WireTaskResult = Type.Object(
  {
    taskId: Int(),
    attempt: Int(1),
    exitCode: Nullable(Type.Integer()),
    signal: Nullable(Str(32)),
    timedOut: Type.Boolean(),
    error: Nullable(Str(65_536)),
    startedAt: Int(),
    durationMs: Int(),
    maxRssKiB: Nullable(Int()),
    stdout: WireText,
    stderr: WireText,
    stdoutTruncated: Type.Boolean(),
    stderrTruncated: Type.Boolean(),
    outputsTarGzB64: Nullable(Type.String()),
    oom: Type.Optional(Type.Boolean()),
    memPeakKiB: Type.Optional(Nullable(Int())),
  },
  Closed,
);
export type WireTaskResult = Static<typeof WireTaskResult>;

/** The machine as systeminformation describes it, reduced to what the dispatcher shows and matches on. */
export const Inventory = Type.Object(
  {
    hostname: Str(255),
    cpu: Type.Object({ model: Str(256), cores: Int(), physicalCores: Int(), speedGHz: Nullable(Type.Number()) }, Closed),
    memoryMiB: Int(),
    nics: Type.Array(
      Type.Object(
        { name: Str(64), mac: Str(64), ipv4: Nullable(Str(64)), speedMbps: Nullable(Type.Number()), virtual: Type.Boolean() },
        Closed,
      ),
      { maxItems: 256 },
    ),
    disks: Type.Array(Type.Object({ name: Str(256), type: Str(64), sizeBytes: Type.Number(), model: Str(256) }, Closed), { maxItems: 256 }),
    system: Type.Object({ manufacturer: Str(256), model: Str(256), uuid: Str(128), serial: Str(256) }, Closed),
    os: Type.Object({ kernel: Str(128), distro: Str(256), arch: Str(32) }, Closed),
    /** The root file system is in RAM (the diskless image) rather than on a disk. */
    ramRoot: Type.Boolean(),
  },
  Closed,
);
export type Inventory = Static<typeof Inventory>;

export const RunningTask = Type.Object({ taskId: Int(), attempt: Int(1), startedAt: Int(), progress: Nullable(Fraction) }, Closed);
export type RunningTask = Static<typeof RunningTask>;

/** A file the agent fetches over HTTP and checks before using it (kexec). */
export const FileRef = Type.Object(
  {
    url: Type.String({ minLength: 1, maxLength: 2048, pattern: '^https?://' }),
    sha256: Type.String({ pattern: '^[0-9a-f]{64}$' }),
    size: Int(),
  },
  Closed,
);
export type FileRef = Static<typeof FileRef>;

/**
 * Boot another kernel without the firmware: the agent fetches the kernel and the initrds,
 * checks each sha256, concatenates the initrds in order (the image's root.cpio first, as the
 * boot script loads them) and kexecs with this command line.
 */
export const KexecPlan = Type.Object(
  { kernel: FileRef, initrds: Type.Array(FileRef, { minItems: 1, maxItems: 4 }), cmdline: Str(4096) },
  Closed,
);
export type KexecPlan = Static<typeof KexecPlan>;

/**
 * What a `reboot` with a kexec plan reports in its `control-done` (sent before the machine
 * goes): the way it is rebooting, and why the firmware when kexec was asked for.
 */
export const RebootPath = Type.Object(
  { path: Type.Union([Type.Literal('kexec'), Type.Literal('firmware')]), reason: Type.Optional(Str(4096)) },
  Closed,
);
export type RebootPath = Static<typeof RebootPath>;

/**
 * The image a node booted, from its kernel command line (`lc.image=<name>@<version>`,
 * `lc.via=kexec`), and the image's health check as the agent ran it at start.
 */
export const BootedImage = Type.Object(
  {
    name: Str(64),
    version: Str(64),
    via: Type.Union([Type.Literal('firmware'), Type.Literal('kexec')]),
    health: Type.Union([Type.Literal('none'), Type.Literal('passed'), Type.Literal('failed')]),
    /** Why it failed (the check's output, bounded). */
    healthDetail: Type.Optional(Str(4096)),
  },
  Closed,
);
export type BootedImage = Static<typeof BootedImage>;

/** A health check's output travels (and is kept) up to this many characters: its end, where the error usually is. */
export const MAX_HEALTH_OUTPUT = 4096;

/**
 * The cluster file's health check for this node (welcome): the agent runs it at start and
 * every `intervalMs`, kills it at `timeoutMs`, and reports each run (`health`).
 */
export const HealthCheck = Type.Object(
  {
    command: Type.Union([Type.Array(Str(1 << 16), { minItems: 1, maxItems: 4096 }), Type.String({ minLength: 1, maxLength: 1 << 16 })]),
    intervalMs: Int(1000),
    timeoutMs: Int(1000),
  },
  Closed,
);
export type HealthCheck = Static<typeof HealthCheck>;

/** Operator commands (mirrors agents/control-contract.ts ControlCommand). */
export const ControlCommand = Type.Union([
  /**
   * With `kexec` (and not `firmware`), the agent acknowledges, loads the plan, reports the path
   * in `control-done` (RebootPath) and then reboots; any failure falls back to the firmware.
   */
  Type.Object({ kind: Type.Literal('reboot'), kexec: Type.Optional(KexecPlan), firmware: Type.Optional(Type.Boolean()) }, Closed),
  Type.Object({ kind: Type.Literal('poweroff') }, Closed),
  Type.Object({ kind: Type.Literal('inspect') }, Closed),
  Type.Object(
    {
      kind: Type.Literal('exec'),
      command: Type.Union([Type.Array(Str(1 << 16), { minItems: 1, maxItems: 4096 }), Type.String({ minLength: 1, maxLength: 1 << 20 })]),
      timeoutMs: Type.Optional(Int(1)),
    },
    Closed,
  ),
  Type.Object({ kind: Type.Literal('cancel'), taskId: Int(), attempt: Type.Optional(Int(1)) }, Closed),
]);
export type ControlCommand = Static<typeof ControlCommand>;

/** Why a peer rejected a message. */
export const ERROR_CODES = [
  'malformed',
  'oversize',
  'out-of-order',
  'unauthenticated',
  'unsupported',
  'untrusted',
  'unavailable',
  'internal',
] as const;
export type ProtocolErrorCode = (typeof ERROR_CODES)[number];

const ErrorMessage = Type.Object(
  {
    type: Type.Literal('error'),
    code: Type.Union(ERROR_CODES.map((c) => Type.Literal(c))),
    message: Str(4096),
    /** The offending field (`/results/3/exitCode`), when one is to blame. */
    field: Type.Optional(Str(1024)),
    /** The type of the rejected message, when it could be read. */
    about: Type.Optional(Str(64)),
  },
  Closed,
);

// ---------------------------------------------------------------- agent → dispatcher

export const Hello = Type.Object(
  {
    type: Type.Literal('hello'),
    protocol: Int(1),
    agentVersion: Str(64),
    mac: MacText,
    /**
     * A per-boot token (from the boot script, bound to the MAC, one hello), a session
     * credential (derived in an earlier session of this boot: reconnects, session.ts), or an
     * enrollment token (hosts that did not PXE-boot).
     */
    auth: Type.Object(
      {
        kind: Type.Union([Type.Literal('boot'), Type.Literal('session'), Type.Literal('enroll')]),
        token: Type.String({ minLength: 1, maxLength: 256 }),
      },
      Closed,
    ),
    /** 32 random bytes: the dispatcher signs them back in `welcome` (freshness). */
    nonce: B64Key,
    /** The agent's ephemeral X25519 public key (raw 32 bytes). */
    ephemeralKey: B64Key,
    slots: Int(1),
    inventory: Inventory,
    /** Tasks still running on this agent (after a reconnect). */
    running: Type.Array(RunningTask, { maxItems: MAX_BATCH }),
    /** Tasks whose results the agent holds but the dispatcher has not acknowledged; they follow as `results`. */
    undelivered: Type.Array(TaskRef, { maxItems: MAX_UNDELIVERED_IN_HELLO }),
    /** The image this boot came from (absent on hosts not booted by the dispatcher). */
    image: Type.Optional(BootedImage),
    /** What the agent allocates to tasks (absent: `slots` tasks of any size, as before resources). */
    resources: Type.Optional(NodeResources),
  },
  Closed,
);

const AgentHeartbeat = Type.Object(
  {
    type: Type.Literal('heartbeat'),
    ts: Int(),
    load1: Nullable(Type.Number()),
    memUsedMiB: Nullable(Int()),
    memTotalMiB: Nullable(Int()),
    uptimeS: Nullable(Int()),
    running: Type.Array(RunningTask, { maxItems: MAX_BATCH }),
    /** Resources of the tasks running or queued on the agent now. */
    allocated: Type.Optional(Resources),
  },
  Closed,
);

/**
 * "I can take N more tasks": adds N to the credit the dispatcher holds for this connection,
 * and `free` to its resource credit (each task handed out spends its request).
 */
const Ready = Type.Object(
  { type: Type.Literal('ready'), n: Type.Integer({ minimum: 1, maximum: MAX_BATCH }), free: Type.Optional(Resources) },
  Closed,
);

const Progress = Type.Object(
  {
    type: Type.Literal('progress'),
    items: Type.Array(Type.Object({ taskId: Int(), attempt: Int(1), fraction: Fraction }, Closed), { minItems: 1, maxItems: MAX_BATCH }),
  },
  Closed,
);

/** Finished tasks; `ready` asks for more tasks in the same message (as a `ready` message would): one message per round trip. */
const Results = Type.Object(
  {
    type: Type.Literal('results'),
    results: Type.Array(WireTaskResult, { minItems: 1, maxItems: MAX_BATCH }),
    ready: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_BATCH })),
    /** Resource credit added with `ready`. */
    free: Type.Optional(Resources),
  },
  Closed,
);

/** One run of the health check: exit 0 passes; a non-zero exit, a start failure or its timeout fails. */
const HealthResult = Type.Object(
  {
    type: Type.Literal('health'),
    ok: Type.Boolean(),
    exitCode: Nullable(Type.Integer()),
    timedOut: Type.Boolean(),
    /** Its stdout and stderr as they came, the last MAX_HEALTH_OUTPUT characters; `timed out after Ns` when it hung. */
    output: Str(MAX_HEALTH_OUTPUT),
    durationMs: Int(),
  },
  Closed,
);
export type HealthResultMessage = Static<typeof HealthResult>;

const ControlAck = Type.Object(
  { type: Type.Literal('control-ack'), id: Int(1), ok: Type.Boolean(), error: Type.Optional(Str(4096)) },
  Closed,
);
const ControlOutput = Type.Object(
  {
    type: Type.Literal('control-output'),
    id: Int(1),
    stream: Type.Union([Type.Literal('stdout'), Type.Literal('stderr')]),
    data: Type.String(),
  },
  Closed,
);
const ControlDone = Type.Object(
  {
    type: Type.Literal('control-done'),
    id: Int(1),
    ok: Type.Boolean(),
    result: Type.Optional(Type.Unknown()),
    error: Type.Optional(Str(4096)),
  },
  Closed,
);

export const AGENT_MESSAGES = {
  hello: Hello,
  heartbeat: AgentHeartbeat,
  ready: Ready,
  progress: Progress,
  results: Results,
  'control-ack': ControlAck,
  'control-output': ControlOutput,
  'control-done': ControlDone,
  health: HealthResult,
  error: ErrorMessage,
} as const;

export type HelloMessage = Static<typeof Hello>;
export type AgentMessage = { [K in keyof typeof AGENT_MESSAGES]: Static<(typeof AGENT_MESSAGES)[K]> }[keyof typeof AGENT_MESSAGES];
export type AgentMessageType = AgentMessage['type'];

// ---------------------------------------------------------------- dispatcher → agent

export const Welcome = Type.Object(
  {
    type: Type.Literal('welcome'),
    protocol: Int(1),
    dispatcherVersion: Str(64),
    nodeName: Str(64),
    /** The dispatcher's ephemeral X25519 public key (raw 32 bytes). */
    ephemeralKey: B64Key,
    /** Ed25519 signature by the dispatcher's identity over the handshake transcript (session.ts). */
    signature: Type.String({ minLength: 86, maxLength: 88 }),
    heartbeatMs: Int(100),
    missedHeartbeats: Int(1),
    /** The largest message the dispatcher accepts; the agent splits result batches to fit. */
    maxMessageBytes: Int(1024),
    /** The health check this node runs (cluster file); absent: none. */
    healthCheck: Type.Optional(HealthCheck),
  },
  Closed,
);

export const REFUSAL_REASONS = ['bad-token', 'denied', 'pending', 'protocol', 'malformed', 'stopping'] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

const Refused = Type.Object(
  {
    type: Type.Literal('refused'),
    reason: Type.Union(REFUSAL_REASONS.map((r) => Type.Literal(r))),
    message: Str(4096),
    /** Try again after this long (pending approval, dispatcher stopping); absent: a human must act first. */
    retryAfterMs: Type.Optional(Int()),
  },
  Closed,
);

const DispatcherHeartbeat = Type.Object({ type: Type.Literal('heartbeat'), ts: Int() }, Closed);
const Tasks = Type.Object({ type: Type.Literal('tasks'), tasks: Type.Array(TaskAssignment, { minItems: 1, maxItems: MAX_BATCH }) }, Closed);
/** Results the dispatcher has made durable (or found duplicate/stale): the agent may forget them. */
const Ack = Type.Object({ type: Type.Literal('ack'), refs: Type.Array(TaskRef, { minItems: 1, maxItems: MAX_BATCH }) }, Closed);
/** Stop these tasks; `report`: send a result for them (operator cancel) or not (the engine already moved on). */
const Cancel = Type.Object(
  {
    type: Type.Literal('cancel'),
    refs: Type.Array(TaskRef, { minItems: 1, maxItems: MAX_BATCH }),
    reason: Str(1024),
    report: Type.Boolean(),
  },
  Closed,
);
const Control = Type.Object({ type: Type.Literal('control'), id: Int(1), command: ControlCommand }, Closed);

export const DISPATCHER_MESSAGES = {
  welcome: Welcome,
  refused: Refused,
  heartbeat: DispatcherHeartbeat,
  tasks: Tasks,
  ack: Ack,
  cancel: Cancel,
  control: Control,
  error: ErrorMessage,
} as const;

export type WelcomeMessage = Static<typeof Welcome>;
export type DispatcherMessage = {
  [K in keyof typeof DISPATCHER_MESSAGES]: Static<(typeof DISPATCHER_MESSAGES)[K]>;
}[keyof typeof DISPATCHER_MESSAGES];
export type DispatcherMessageType = DispatcherMessage['type'];

export type ErrorMessage = Static<typeof ErrorMessage>;

/** Messages that travel before a session key exists (plain frames); every other one is sealed. */
export const HANDSHAKE_TYPES: ReadonlySet<string> = new Set(['hello', 'welcome', 'refused', 'error']);
