/**
 * The import rules of .dependency-cruiser.cjs cannot pass vacuously: each one is broken on
 * purpose by a small fixture tree (written to a temp dir laid out like the repository, so the
 * rules' paths match), and must fire; the allowed imports must not; and the real tree passes.
 * (Node's built-ins are named without `node:` in dependency-cruiser's output.)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
// @ts-expect-error: a plain .mjs script without types (scripts/boundaries.mjs)
import { ROOTS, violations } from '../../../scripts/boundaries.mjs';

interface Violation {
  from: string;
  to: string;
  rule: { name: string; severity: string };
}
const check = violations as (roots: string[], opts?: { baseDir?: string }) => Promise<Violation[]>;

/** The fixture tree: each file breaks (or, under "allowed", keeps) one rule. */
const FILES: Record<string, string> = {
  'tsconfig.json': JSON.stringify({ compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', allowJs: true } }),
  'package.json': JSON.stringify({ type: 'module' }),
  // stand-ins for the real modules the rules name
  'dispatcher/src/store/database.ts': "import { readFileSync } from 'node:fs';\nexport const db = readFileSync;\n",
  'dispatcher/src/log.ts': 'export const log = console;\n',
  'dispatcher/src/dispatch/engine.ts': 'export const engine = 1;\n',
  'dispatcher/src/dispatch/model.ts': 'export const TASK_STATES = [];\n',
  'dispatcher/src/dispatch/contract.ts': 'export type TaskAssignment = { id: number };\n',
  'dispatcher/src/api/schemas.ts': 'export type NodeView = { name: string };\n',
  'dispatcher/src/api/enrollment/schemas.ts': 'export type EnrollToken = { token: string };\n',
  'dispatcher/src/api/sse.ts': 'export class SseParser {}\n',
  'dispatcher/src/version.ts': "export const VERSION = '0';\n",
  'dispatcher/src/protocol/messages.ts': 'export type Hello = { type: "hello" };\n',
  'dispatcher/src/nodes/mac.ts': "import { log } from '../log.js';\nexport const mac = log;\n",
  'test/lab/harness.ts': 'export const harness = 1;\n',
  // violations
  'dispatcher/src/dhcp/codec.ts': "import { createSocket } from 'node:dgram';\nexport const s = createSocket;\n",
  'dispatcher/src/tftp/codec.ts': "import { mac } from '../nodes/mac.js';\nexport const m = mac;\n", // reaches log.ts through a helper
  'image/src/cpio.ts': "import { setTimeout } from 'node:timers/promises';\nexport const t = setTimeout;\n",
  'dispatcher/src/dispatch/ring.ts': "import { writeFileSync } from 'node:fs';\nexport const w = writeFileSync;\n",
  'node-agent/src/store-user.ts': "import { db } from '../../dispatcher/src/store/database.js';\nexport const d = db;\n",
  'node-agent/src/contract-user.ts':
    "import type { TaskAssignment } from '../../dispatcher/src/dispatch/contract.js';\nexport type T = TaskAssignment;\n",
  'dispatcher/src/ctl/commands/engine-user.ts': "import { engine } from '../../dispatch/engine.js';\nexport const e = engine;\n",
  'dispatcher/src/ctl/commands/model-user.ts': "import { TASK_STATES } from '../../dispatch/model.js';\nexport const s = TASK_STATES;\n",
  'dispatcher/src/web/static/app.js': "/** @typedef {import('../../dispatch/model.js').TASK_STATES} States */\nexport const x = 1;\n",
  'dispatcher/src/boot/uses-test.ts': "import { harness } from '../../../test/lab/harness.js';\nexport const h = harness;\n",
  'dispatcher/src/events/a.ts': "import { b } from './b.js';\nexport const a = () => b;\n",
  'dispatcher/src/events/b.ts': "import { a } from './a.js';\nexport const b = () => a;\n",
  // allowed
  'dispatcher/src/ctl/commands/jobs.ts':
    "import type { NodeView } from '../../api/schemas.js';\nimport type { EnrollToken } from '../../api/enrollment/schemas.js';\nimport { SseParser } from '../../api/sse.js';\nimport { VERSION } from '../../version.js';\nexport const j: [NodeView, EnrollToken][] = [];\nexport const s = [SseParser, VERSION];\n",
  'node-agent/src/agent.ts': "import type { Hello } from '../../dispatcher/src/protocol/messages.js';\nexport type A = [Hello];\n",
  'dispatcher/src/protocol/codec.ts': "import type { Hello } from './messages.js';\nexport type H = Hello;\n",
};

let dir: string;
let found: Violation[];
const fired = (rule: string, from: string, to?: string) =>
  found.some((v) => v.rule.name === rule && v.from === from && (to === undefined || v.to === to));

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'lc-boundaries-'));
  for (const [path, text] of Object.entries(FILES)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  found = await check(['dispatcher', 'node-agent', 'image', 'test'], { baseDir: dir });
}, 120_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('import boundaries (.dependency-cruiser.cjs), on deliberate violations', () => {
  it.each([
    ['a codec importing node:dgram', 'codec-no-io', 'dispatcher/src/dhcp/codec.ts', 'dgram'],
    ['a codec reaching the logger through a helper', 'codec-no-io', 'dispatcher/src/tftp/codec.ts', undefined],
    ['the cpio writer importing timers', 'codec-no-io', 'image/src/cpio.ts', 'timers/promises'],
    ['the task ring importing fs', 'ring-no-io', 'dispatcher/src/dispatch/ring.ts', 'fs'],
    ['the agent importing the store', 'agent-only-protocol', 'node-agent/src/store-user.ts', 'dispatcher/src/store/database.ts'],
    ['the agent reaching the store', 'agent-no-dispatcher-io', 'node-agent/src/store-user.ts', undefined],
    [
      'the agent importing dispatch/contract.ts (its wire types are in protocol/)',
      'agent-only-protocol',
      'node-agent/src/contract-user.ts',
      'dispatcher/src/dispatch/contract.ts',
    ],
    [
      'ctl importing dispatch internals',
      'ctl-only-api-schemas',
      'dispatcher/src/ctl/commands/engine-user.ts',
      'dispatcher/src/dispatch/engine.ts',
    ],
    [
      'ctl importing dispatch/model.ts (its schemas are in the API schema modules)',
      'ctl-only-api-schemas',
      'dispatcher/src/ctl/commands/model-user.ts',
      'dispatcher/src/dispatch/model.ts',
    ],
    [
      'the page taking types from dispatch internals (JSDoc import)',
      'page-only-api-schemas',
      'dispatcher/src/web/static/app.js',
      'dispatcher/src/dispatch/model.ts',
    ],
    ['product code importing a test harness', 'product-not-test', 'dispatcher/src/boot/uses-test.ts', 'test/lab/harness.ts'],
    ['two modules importing each other', 'no-circular', 'dispatcher/src/events/a.ts', 'dispatcher/src/events/b.ts'],
  ])('fires on %s', (_what, rule, from, to) => {
    expect(fired(rule, from, to), JSON.stringify(found, null, 1)).toBe(true);
  });

  it('allows what the rules allow: the API schema modules, api/sse.ts and version.ts from ctl, protocol/ from the agent', () => {
    const allowed = ['dispatcher/src/ctl/commands/jobs.ts', 'node-agent/src/agent.ts', 'dispatcher/src/protocol/codec.ts'];
    expect(found.filter((v) => allowed.includes(v.from))).toEqual([]);
  });
});

describe('import boundaries on the real tree', () => {
  it('has no violation', async () => {
    expect(await check(ROOTS)).toEqual([]);
  }, 120_000);
});
