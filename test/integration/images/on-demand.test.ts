/**
 * On-demand images (issue 13, point 7) on simulated machines that boot images and kexec
 * (simulated-machine.ts `images: true`): queued tasks need an image no idle node runs, the
 * cluster file lets nodes switch (`onDemand`), so the dispatcher moves an idle node onto it
 * (by kexec), keeps the minimum on the image it leaves, and says so in the events.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startDispatcher, type DispatcherProcess, type ResultLine } from '../../lab/dispatcher.js';
import { SimulatedMachine } from '../../lab/simulated-machine.js';
import { baseEnv, runCtl } from '../../lab/run-ctl.js';
import { tempDir } from '../../unit/agent/temp-dirs.js';
import type { NodeView } from '../../../dispatcher/src/api/schemas.js';

const MACS = ['52:54:00:ce:00:01', '52:54:00:ce:00:02'];

let d: DispatcherProcess;
let machines: SimulatedMachine[];
let admin: Record<string, string>;
let library: string;
const version: Record<string, string> = {};

/** One image with one version, as `make image` leaves it. */
function addImage(image: string): void {
  const inputs = createHash('sha256').update(image).digest('hex');
  const dir = join(library, image, 'versions', inputs.slice(0, 12));
  mkdirSync(dir, { recursive: true });
  const files = { vmlinuz: `${image} kernel\n`, 'initrd.img': `${image} initrd\n` };
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  writeFileSync(
    join(dir, 'manifest.json'),
    JSON.stringify({ inputs, files: Object.fromEntries(Object.entries(files).map(([n, t]) => [n, { size: t.length }])) }),
  );
  for (const name of ['vmlinuz', 'initrd.img', 'manifest.json']) copyFileSync(join(dir, name), join(library, image, name));
  writeFileSync(join(library, image, 'versions', 'order'), `${inputs.slice(0, 12)}\n`);
  version[image] = inputs.slice(0, 12);
}

async function ok(...args: string[]): Promise<string> {
  const r = await runCtl(args, admin, { timeoutMs: 120_000 });
  expect(r.code, `dispatcherctl ${args.join(' ')}\n${r.stdout}\n${r.stderr}`).toBe(0);
  return r.stdout;
}

async function nodes(): Promise<NodeView[]> {
  return (JSON.parse(await ok('--json', 'nodes')) as { nodes: NodeView[] }).nodes;
}

async function until<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 45_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const r = await probe();
    if (r !== undefined && r !== false) return r;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}\n${d.output().slice(-3000)}`);
    await new Promise((res) => setTimeout(res, 200));
  }
}

beforeAll(async () => {
  library = tempDir('lc-ondemand-lib-');
  addImage('alpha');
  addImage('beta');
  d = await startDispatcher({
    args: ['--images', library],
    cluster: [
      'enrollment: auto',
      'image: alpha',
      'onDemand:',
      '  images: [alpha, beta]',
      '  keep: {alpha: 1}',
      'nodes:',
      ...MACS.map((mac, i) => `  - {name: node${i + 1}, mac: "${mac}"}`),
      '',
    ].join('\n'),
  });
  admin = { ...baseEnv(d.url), LILCLUSTER_TOKEN: d.token };
  machines = MACS.map(
    (mac) => new SimulatedMachine({ dispatcherUrl: d.url, mac, pubKeyFile: d.pubKeyFile, slots: 2, postMs: 50, images: true }),
  );
  for (const m of machines) m.powerOn();
  await until('both nodes up on alpha', async () => {
    const up = (await nodes()).filter((n) => n.connected && n.state === 'ready' && n.imageVersion === `alpha@${version.alpha}`);
    return up.length === 2;
  });
}, 60_000);

afterAll(async () => {
  await Promise.all((machines ?? []).map((m) => m.stop()));
  for (const m of machines ?? []) m.cleanup();
  await d?.stop();
});

describe('on-demand images', () => {
  it('moves one idle node onto an image queued tasks need, by kexec, and keeps the minimum on the other', async () => {
    // No node runs beta: without onDemand this submission would be refused (no node boots beta).
    const params = join(library, 'beta.csv');
    writeFileSync(params, `i\n${Array.from({ length: 6 }, (_, i) => i).join('\n')}\n`);
    const out = await ok('submit', '--image', 'beta', '--params', params, '--', 'sh', '-c', 'echo {i}');
    const job = /(\d+)/.exec(out)![1]!;
    const rows = await until('the beta job done', async () => {
      const text = (await ok('--json', 'results', job)).trim();
      const r = text ? text.split('\n').map((l) => JSON.parse(l) as ResultLine) : [];
      return r.length === 6 && r.every((x) => x.state === 'done') ? r : undefined;
    });
    const ranOn = new Set(rows.map((r) => r.result!.node!));
    expect(ranOn.size).toBe(1);
    const moved = [...ranOn][0]!;
    const all = await nodes();
    const m = all.find((n) => n.name === moved)!;
    expect(m.imageVersion).toBe(`beta@${version.beta}`);
    expect(m.image.via).toBe('kexec');
    // keep: {alpha: 1}: the other stays on alpha.
    expect(all.find((n) => n.name !== moved)!.imageVersion).toBe(`alpha@${version.alpha}`);
    const events = await ok('events', '--limit', '200');
    expect(events).toMatch(new RegExp(`${moved} moves from alpha to beta: queued tasks need beta and no idle node runs it`));
  });

  it('moves no node when an idle node already runs the image', async () => {
    const before = (await nodes()).map((n) => [n.name, n.imageVersion]);
    const moves = () => ok('--json', 'events', '--limit', '500').then((t) => (t.match(/moves from alpha to beta/g) ?? []).length);
    const movesBefore = await moves();
    // The idle beta node takes it; once it is done nothing is queued, so no later pass can move anyone.
    await ok('submit', '--wait', '--image', 'beta', '--', 'true');
    expect((await nodes()).map((n) => [n.name, n.imageVersion])).toEqual(before);
    expect(await moves()).toBe(movesBefore);
  });
});
