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
 * What dispatcherctl may import besides the API schema modules: api/sse.ts, the framing of the
 * API's event streams (pure: the dispatcher writes it, the CLI parses it), and version.ts, the
 * product's version (one build-time constant with no imports, shared by every program of the
 * package; it is not dispatcher internals, and the version rule below keeps it a leaf).
 */
const CTL_ALSO = ['^dispatcher/src/api/sse\\.ts$', '^dispatcher/src/version\\.ts$'];

const CTL_WHY =
  'dispatcherctl talks to the dispatcher over HTTP only: it imports the API schema modules, api/sse.ts, version.ts and its own code';
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
      to: { path: '^dispatcher/', pathNot: ['^dispatcher/src/protocol/'] },
    },
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
        pathNot: ['^dispatcher/src/ctl/', API_SCHEMAS, ...CTL_ALSO],
      },
    },
    {
      name: 'version-leaf',
      severity: 'error',
      comment: 'version.ts is imported by dispatcherctl (CTL_ALSO), so it must stay one constant that imports nothing',
      from: { path: '^dispatcher/src/version\\.ts$' },
      to: {},
    },
    {
      name: 'api-schemas-leaf',
      severity: 'error',
      comment:
        'the API schema modules (and api/sse.ts) are what dispatcherctl and the page import, so they import only TypeBox and each other: ' +
        'no dispatch, nodes, events or store code comes along',
      from: { path: [API_SCHEMAS, '^dispatcher/src/api/sse\\.ts$'] },
      to: { pathNot: [API_SCHEMAS, '^node_modules/@sinclair/typebox/'] },
    },
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
