/**
 * The operator API's shapes (TypeBox): they validate requests, serialize answers, document
 * the API (OpenAPI at /api/v1/openapi.json) and type the CLI and page's view of it.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';

export const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);

export const ErrorBody = Type.Object(
  {
    error: Type.Object({
      code: Type.String({ description: 'stable DSP_ERR_* code (see dispatcher/src/errors.ts)' }),
      message: Type.String(),
      hint: Type.Optional(Type.String({ description: 'what to do about it' })),
    }),
  },
  { description: 'every 4xx/5xx answer' },
);

/** Answers every route may give besides its own. */
export const errorResponses = {
  400: ErrorBody,
  401: ErrorBody,
  404: ErrorBody,
  409: ErrorBody,
} as const;

/** A node's states (who may move a node between them: nodes/states.ts). */
export const NODE_STATES = ['booting', 'ready', 'busy', 'draining', 'rebooting', 'lost', 'off'] as const;
export type NodeState = (typeof NODE_STATES)[number];
export const NodeState = Type.Union(NODE_STATES.map((s) => Type.Literal(s)));

export const NodeRef = Type.Object({
  node: Type.String({ description: 'node name, MAC (any usual spelling) or system UUID', minLength: 1, maxLength: 200 }),
});

export const RunningTask = Type.Object({
  taskId: Type.Integer(),
  attempt: Type.Integer(),
  progress: Nullable(Type.Number({ description: "0..1, from the task's PROGRESS lines" })),
  startedAt: Type.Number(),
});

/** The cluster file's health check as the node's agent last ran it (nodes/node-health.ts). */
export const NodeHealthSchema = Type.Object({
  ok: Type.Boolean(),
  output: Type.String({ description: "the check's output, its last 4 KiB; `timed out after Ns` when it hung" }),
  at: Type.Number({ description: 'unix ms: since when it has had this outcome' }),
  checkedAt: Type.Optional(Type.Number({ description: 'unix ms: its last run' })),
});
export type NodeHealth = Static<typeof NodeHealthSchema>;

/** Why a node was drained as suspect (nodes/suspect.ts): its failed attempts in a row, and where their jobs succeeded. */
export const SuspectEvidence = Type.Object({
  at: Type.Number({ description: 'unix ms' }),
  failures: Type.Array(
    Type.Object({
      taskId: Type.Integer(),
      attempt: Type.Integer(),
      jobId: Type.Integer(),
      exitCode: Nullable(Type.Integer()),
      error: Type.Optional(Type.String()),
    }),
  ),
  succeededElsewhere: Type.Array(
    Type.Object({ jobId: Type.Integer(), nodes: Type.Array(Type.String(), { description: 'names of nodes where its tasks succeeded' }) }),
  ),
});
export type SuspectEvidence = Static<typeof SuspectEvidence>;

const Allocation = Type.Object({ total: Type.Integer(), allocated: Type.Integer() });
/** What a node's agent hands out to tasks and how much of it its tasks hold now. */
export const NodeResourcesView = Type.Object({
  cores: Allocation,
  memoryMiB: Allocation,
  gpus: Type.Optional(Allocation),
  enforced: Type.Boolean({ description: 'tasks run in cgroups holding them to their requests (cgroup v2 with the memory controller)' }),
});
export type NodeResourcesView = Static<typeof NodeResourcesView>;

/** A node's power as last known (power/power-state.ts): from BMC actions and what the node did; not asked of the BMC. */
export const NodePower = Type.Object({
  state: Type.Union([Type.Literal('on'), Type.Literal('off'), Type.Literal('unknown')]),
  at: Type.Number({ description: 'unix ms of the action or observation (0: not seen since the dispatcher started)' }),
  by: Type.Optional(
    Type.Union([Type.Literal('operator'), Type.Literal('healing'), Type.Literal('policy')], { description: 'who powered it on or off' }),
  ),
});
export type NodePower = Static<typeof NodePower>;

/** The power policy powered the node on twice and it did not come back (until its agent says hello). */
export const NodeUnreachable = Type.Object({ since: Type.Number({ description: 'unix ms' }), reason: Type.String() });

export const NodeView = Type.Object({
  name: Type.String(),
  mac: Type.String(),
  uuid: Nullable(Type.String()),
  state: NodeState,
  /** Unix ms. */
  stateSince: Type.Number(),
  enrollment: Type.Union([Type.Literal('admitted'), Type.Literal('pending')]),
  labels: Type.Array(Type.String()),
  ip: Nullable(Type.String()),
  imageVersion: Nullable(Type.String({ description: '`name@version` of the image it booted' })),
  image: Type.Object({
    image: Type.String({ description: "the image it boots (its own, its labels', or the default)" }),
    next: Nullable(Type.String({ description: '`name@version` its next boot gets (null: that image is not built)' })),
    stale: Type.Boolean({ description: "it runs an older version than its image's newest build" }),
    health: Nullable(
      Type.Union([Type.Literal('none'), Type.Literal('passed'), Type.Literal('failed')], {
        description: "the image's health check as its agent ran it at start",
      }),
    ),
    healthDetail: Nullable(Type.String()),
    via: Nullable(Type.Union([Type.Literal('firmware'), Type.Literal('kexec')], { description: 'how its current boot started' })),
  }),
  agentVersion: Nullable(Type.String()),
  bootCount: Type.Integer(),
  firstSeen: Type.Number(),
  lastSeen: Nullable(Type.Number()),
  connected: Type.Boolean({ description: "the node's agent is connected now" }),
  draining: Type.Boolean(),
  cpu: Nullable(Type.String({ description: 'CPU model' })),
  cores: Nullable(Type.Integer()),
  memoryMiB: Nullable(Type.Number()),
  load1: Nullable(Type.Number()),
  memUsedMiB: Nullable(Type.Number()),
  uptimeS: Nullable(Type.Number()),
  lastHeartbeat: Nullable(Type.Number()),
  slots: Nullable(Type.Integer()),
  tasks: Type.Array(RunningTask),
  bootStage: Nullable(Type.Object({ stage: Type.String(), ts: Type.Number(), boot: Type.Integer() })),
  resources: Type.Optional(NodeResourcesView),
  health: Type.Optional(NodeHealthSchema),
  suspect: Type.Optional(SuspectEvidence),
  power: Type.Optional(NodePower),
  unreachable: Type.Optional(NodeUnreachable),
});
export type NodeView = Static<typeof NodeView>;

export const NodeList = Type.Object({ nodes: Type.Array(NodeView) });
export type NodeList = Static<typeof NodeList>;

export const NodeDetail = Type.Composite([
  NodeView,
  Type.Object({
    fixedIp: Nullable(Type.String()),
    firstStage: Nullable(Type.String()),
    fromClusterFile: Type.Boolean(),
    inventory: Nullable(Type.Record(Type.String(), Type.Unknown(), { description: "the agent's hello inventory (systeminformation)" })),
    lastInspect: Nullable(Type.Object({ at: Type.Number(), snapshot: Type.Unknown() })),
  }),
]);
export type NodeDetail = Static<typeof NodeDetail>;

export const NodeListQuery = Type.Object({
  state: Type.Optional(NodeState),
  label: Type.Optional(Type.String({ maxLength: 200 })),
});

export const ActionResult = Type.Object({
  node: Type.String(),
  action: Type.String(),
  /** The node's state after the action. */
  state: NodeState,
  /** Time from sending the command to the agent's acknowledgement, ms (commands that go to the agent). */
  ackMs: Nullable(Type.Number()),
  message: Type.String(),
});
export type ActionResult = Static<typeof ActionResult>;

export const InspectResult = Type.Object({
  node: Type.String(),
  at: Type.Number(),
  ackMs: Type.Number(),
  snapshot: Type.Unknown({ description: 'systeminformation snapshot plus live load, memory and temperatures' }),
});
export type InspectResult = Static<typeof InspectResult>;

/**
 * exec: `argv` (run directly) or `shell` (a command line run by /bin/sh -c), exactly one.
 * Two fields rather than one union: fastify's validator coerces a string into a one-element
 * array (coerceTypes: 'array'), which would make the two forms ambiguous.
 */
export const ExecRequest = Type.Object(
  {
    argv: Type.Optional(
      Type.Array(Type.String({ maxLength: 65_536 }), { minItems: 1, maxItems: 4096, description: 'program and arguments, run directly' }),
    ),
    shell: Type.Optional(Type.String({ minLength: 1, maxLength: 65_536, description: 'a command line run by /bin/sh -c' })),
    timeoutMs: Type.Optional(Type.Integer({ minimum: 1, maximum: 24 * 3600_000 })),
  },
  { additionalProperties: false },
);

/** One line of the exec answer (application/x-ndjson). */
export type ExecLine =
  | { type: 'started'; node: string; ackMs: number | null }
  | { type: 'output'; stream: 'stdout' | 'stderr'; data: string }
  | { type: 'exit'; exitCode: number | null; signal: string | null; durationMs: number | null }
  | { type: 'error'; error: { code: string; message: string; hint?: string } };

export const OperationNode = Type.Object({
  name: Type.String(),
  phase: Type.Union(['waiting', 'draining', 'rebooting', 'back', 'failed', 'skipped'].map((p) => Type.Literal(p))),
  since: Type.Number(),
  bootCountBefore: Type.Integer(),
  runningTasks: Type.Integer(),
  error: Nullable(Type.String()),
});

export const OperationView = Type.Object({
  id: Type.Integer(),
  kind: Type.Union([Type.Literal('rolling-reboot'), Type.Literal('rollout'), Type.Literal('rollback')]),
  state: Type.Union(['running', 'done', 'failed', 'cancelled'].map((p) => Type.Literal(p))),
  startedAt: Type.Number(),
  finishedAt: Nullable(Type.Number()),
  batch: Type.Integer(),
  message: Type.String(),
  nodes: Type.Array(OperationNode),
});
export type OperationView = Static<typeof OperationView>;

export const RollingRebootRequest = Type.Object(
  {
    nodes: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: 200 }), {
        maxItems: 100_000,
        description: 'default: every admitted node whose agent is connected',
      }),
    ),
    batch: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, description: 'nodes rebooted at a time (default 1)' })),
    drainTimeoutS: Type.Optional(Type.Integer({ minimum: 1, description: 'give up on a node whose tasks run longer (default: wait)' })),
    backTimeoutS: Type.Optional(Type.Integer({ minimum: 1, description: 'give up on a node not back after this long (default 600)' })),
    firmware: Type.Optional(Type.Boolean({ description: 'reboot through the firmware, not kexec' })),
  },
  { additionalProperties: false },
);

export interface ClusterEvent {
  id: number;
  /** Unix time, ms. */
  ts: number;
  /** Dotted kind: `node.state`, `node.command`, `boot.stage`, `job.done`, ... */
  kind: string;
  /** Node name, when the event concerns one node. */
  node: string | null;
  message: string;
  data: Record<string, unknown> | null;
}

export const ClusterEventSchema = Type.Object({
  id: Type.Integer(),
  ts: Type.Number(),
  kind: Type.String(),
  node: Nullable(Type.String()),
  message: Type.String(),
  data: Nullable(Type.Record(Type.String(), Type.Unknown())),
});

export const EventList = Type.Object({ events: Type.Array(ClusterEventSchema) });
export type EventList = Static<typeof EventList>;

export const EventQuery = Type.Object({
  node: Type.Optional(Type.String({ maxLength: 200 })),
  kind: Type.Optional(Type.String({ maxLength: 100, description: 'prefix: `node` matches node.state, node.command...' })),
  after: Type.Optional(Type.Integer({ minimum: 0, description: 'only events with a larger id' })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000 })),
});

export const TaskCounts = Type.Object({
  queued: Type.Number(),
  running: Type.Number(),
  done: Type.Number(),
  failed: Type.Number(),
  cancelled: Type.Number(),
});

export const StatusView = Type.Object({
  version: Type.String(),
  startedAt: Type.Number(),
  now: Type.Number(),
  uptimeS: Type.Number(),
  network: Type.Object({ interface: Nullable(Type.String()), address: Type.String(), dhcp: Type.String() }),
  enrollment: Type.String(),
  nodes: Type.Object({
    total: Type.Integer(),
    connected: Type.Integer(),
    pending: Type.Integer(),
    /** Unknown machines refused under `enrollment: deny` (since the dispatcher started). */
    denied: Type.Integer(),
    byState: Type.Record(Type.String(), Type.Integer()),
  }),
  tasks: Nullable(TaskCounts),
  dispatchedTotal: Nullable(Type.Number()),
  throughput: Type.Object({
    intervalS: Type.Number(),
    /** Tasks completed in each interval, oldest first (the last few minutes). */
    points: Type.Array(Type.Object({ ts: Type.Number(), completed: Type.Number() })),
  }),
  store: Type.Object({
    commits: Type.Number(),
    writes: Type.Number(),
    avgCommitMs: Type.Number(),
    lastCommitMs: Type.Number(),
    failure: Nullable(Type.String()),
  }),
  operations: Type.Array(OperationView),
});
export type StatusView = Static<typeof StatusView>;

export const DeniedList = Type.Object({
  machines: Type.Array(Type.Object({ mac: Type.String(), firstSeen: Type.Number(), lastSeen: Type.Number(), count: Type.Integer() })),
});
