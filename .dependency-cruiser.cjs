/**
 * Import boundaries, checked by `make boundaries` (scripts/boundaries.mjs, part of `make check`).
 * Each rule says why it exists; test/unit/tooling/boundaries.test.ts breaks each one on purpose
 * with fixture files, so a rule that stopped matching anything would fail there.
 *
 * Paths are relative to the repository root; Node's built-ins appear as `fs`, `node:fs`, etc.
 * Type-only imports count (tsPreCompilationDeps): a type import still couples the code.
 */

/** Sockets, the store, clocks and timers, the logger and the file system: I/O, in one word. */
const IO = [
  '^(node:)?(dgram|net|http|https|http2|tls|fs|fs/promises|timers|timers/promises|perf_hooks)$',
  '^node_modules/(ws|fastify|@fastify/[^/]+|pino|better-sqlite3)/',
  '^dispatcher/src/store/',
  '^dispatcher/src/log\\.ts$',
];

/** The pure codecs: bytes in, typed packet out, and back (STYLE.md, "Shape of the tree"). */
const CODECS = '^(dispatcher/src/(dhcp/codec|tftp/codec|protocol/codec|protocol/messages)|image/src/cpio)\\.ts$';
const RING = '^dispatcher/src/dispatch/ring\\.ts$';
/** The API schema modules: api/schemas.ts, and one api/<resource>/schemas.ts per resource. */
const API_SCHEMAS = '^dispatcher/src/api/(schemas|[^/]+/schemas)\\.ts$';

/**
 * TEMPORARY: the imports that break the ctl/ and node-agent/ rules today, each allowed only from
 * the file that has it, so any new one fails. Remove an entry when its schema moves into the
 * API schema module (issue 12, point 3): dispatcherctl and the page import request/response
 * schemas from the API schema modules (API_SCHEMAS), the agent its wire types from protocol/.
 */
const ALLOWED_TODAY = [
  // dispatcherctl → dispatch, nodes and events internals
  { from: 'dispatcher/src/ctl/commands/jobs.ts', to: 'dispatcher/src/dispatch/model.ts' }, // JobSubmission, JobView, TaskDetail, TaskSummary, TASK_STATES, timeouts
  { from: 'dispatcher/src/ctl/commands/jobs.ts', to: 'dispatcher/src/dispatch/submission.ts' }, // commandText
  { from: 'dispatcher/src/ctl/commands/nodes.ts', to: 'dispatcher/src/nodes/states.ts' }, // NODE_STATES
  { from: 'dispatcher/src/ctl/commands/events.ts', to: 'dispatcher/src/events/event-log.ts' }, // ClusterEvent
  { from: 'dispatcher/src/ctl/client.ts', to: 'dispatcher/src/events/sse.ts' }, // SseParser: the stream's wire format
  { from: 'dispatcher/src/ctl/program.ts', to: 'dispatcher/src/version.ts' }, // VERSION
  // the agent → dispatch/contract.ts (TaskAssignment, TaskResult) instead of protocol/
  { from: 'node-agent/src/agent.ts', to: 'dispatcher/src/dispatch/contract.ts' },
  { from: 'node-agent/src/outbox.ts', to: 'dispatcher/src/dispatch/contract.ts' },
  { from: 'node-agent/src/runner.ts', to: 'dispatcher/src/dispatch/contract.ts' },
  { from: 'node-agent/src/seams.ts', to: 'dispatcher/src/dispatch/contract.ts' },
  { from: 'node-agent/src/task-batch.ts', to: 'dispatcher/src/dispatch/contract.ts' },
];

const exact = (p) => `^${p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`;
const allowedTargets = (fromPrefix) => ALLOWED_TODAY.filter((a) => a.from.startsWith(fromPrefix)).map((a) => exact(a.to));

/** One rule per allowed target: importing it is still forbidden from every other file. */
function temporaryExceptions(name, fromPrefix, why) {
  const targets = [...new Set(ALLOWED_TODAY.filter((a) => a.from.startsWith(fromPrefix)).map((a) => a.to))];
  return targets.map((to) => ({
    name,
    severity: 'error',
    comment: `${why} (${to} is allowed, for now, only where it is imported today)`,
    from: {
      path: `^${fromPrefix}`,
      pathNot: ALLOWED_TODAY.filter((a) => a.to === to && a.from.startsWith(fromPrefix)).map((a) => exact(a.from)),
    },
    to: { path: exact(to) },
  }));
}

const CTL_WHY = 'dispatcherctl talks to the dispatcher over HTTP only: it imports the API schema modules and its own code';
const AGENT_WHY = 'the agent ships alone in the RAM image and speaks the wire protocol: of dispatcher/ it imports protocol/ only';

module.exports = {
  forbidden: [
    {
      name: 'codec-no-io',
      severity: 'error',
      comment:
        'codecs are pure (bytes in, packet out): no socket, store, clock, logger or file system, so fuzzers and golden tests can call them',
      from: { path: CODECS },
      to: { path: IO },
    },
    {
      name: 'codec-no-io',
      severity: 'error',
      comment: 'nor through a helper they import',
      from: { path: CODECS },
      to: { path: IO, reachable: true },
    },
    {
      name: 'ring-no-io',
      severity: 'error',
      comment: 'the task ring is the pure core of dispatch, tested with fast-check; the engine around it does the I/O',
      from: { path: RING },
      to: { path: IO },
    },
    {
      name: 'ring-no-io',
      severity: 'error',
      comment: 'nor through a helper it imports',
      from: { path: RING },
      to: { path: IO, reachable: true },
    },
    {
      name: 'agent-only-protocol',
      severity: 'error',
      comment: AGENT_WHY,
      from: { path: '^node-agent/' },
      to: { path: '^dispatcher/', pathNot: ['^dispatcher/src/protocol/', ...allowedTargets('node-agent/')] },
    },
    ...temporaryExceptions('agent-only-protocol', 'node-agent/', AGENT_WHY),
    {
      name: 'agent-no-dispatcher-io',
      severity: 'error',
      comment: 'nothing the agent reaches may pull the store, SQLite or the HTTP server into the RAM image',
      from: { path: '^node-agent/' },
      to: { path: '^dispatcher/src/store/|^node_modules/(better-sqlite3|fastify|@fastify/[^/]+|pino)/', reachable: true },
    },
    {
      name: 'ctl-only-api-schemas',
      severity: 'error',
      comment: CTL_WHY,
      from: { path: '^dispatcher/src/ctl/' },
      to: {
        path: '^dispatcher/src/',
        pathNot: ['^dispatcher/src/ctl/', API_SCHEMAS, ...allowedTargets('dispatcher/src/ctl/')],
      },
    },
    ...temporaryExceptions('ctl-only-api-schemas', 'dispatcher/src/ctl/', CTL_WHY),
    {
      name: 'page-only-api-schemas',
      severity: 'error',
      comment:
        'the status page (web/static/, run by the browser) sees the dispatcher through the API only: JSDoc types from the API schema modules, nothing else. ' +
        "web/*.ts is the page's server side (routes), which may use the HTTP layer like any route",
      from: { path: '^dispatcher/src/web/static/' },
      to: { pathNot: ['^dispatcher/src/web/static/', API_SCHEMAS, '^node_modules/@sinclair/typebox/'] },
    },
    {
      name: 'product-not-test',
      severity: 'error',
      comment: 'product code never depends on test code (harnesses, fakes, fixtures)',
      from: { path: '^(dispatcher|node-agent|image|pxe)/' },
      to: { path: '^test/' },
    },
    {
      name: 'no-circular',
      severity: 'error',
      comment:
        'no import cycles between modules. Known today, allowed: store/database.ts ↔ store/checkpointer.ts. ' +
        'Between folders there are 38 cycles today (dispatch → nodes → agents → dispatch...), so no folder-level rule yet',
      from: { pathNot: '^dispatcher/src/store/(database|checkpointer)\\.ts$' },
      to: { circular: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '(^|/)(node_modules|dist|\\.cache)/' },
    tsPreCompilationDeps: true,
    detectJSDocImports: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      extensions: ['.ts', '.js', '.mjs', '.cjs', '.d.ts', '.json'],
    },
  },
};
