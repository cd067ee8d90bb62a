/**
 * Several images, kexec reboots, rollout with a canary and rollback (issue 13, points 4-6) on
 * three simulated machines (simulated-machine.ts, `images: true`): the real dispatcher process,
 * the real agents, dispatcherctl; the agents take the real kexec path (download, sha256 check,
 * `kexec -a -l`, `kexec -e`) against the machines' fake kexec. The fast, deterministic twin of
 * test/e2e/images.test.ts.
 *
 * The `--images` library is made here, as `make image` leaves it: `alpha` with three kept
 * versions (v1, bad, v2) whose `versions/order` the test rewrites to choose the newest build,
 * and `beta` with one. Each alpha version has a health check, run by the agent for real in a
 * task root the machine provides (the host's / bound at a path of its own): `bad`'s fails.
 *
 *   node1, node2 boot alpha (cluster file), node3 beta; a background job of short tasks runs
 *   throughout and must end with every task done once.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { startDispatcher, type DispatcherProcess, type ResultLine } from '../../lab/dispatcher.js';
import { SimulatedMachine } from '../../lab/simulated-machine.js';
import { baseEnv, runCtl, type CtlRun } from '../../lab/run-ctl.js';
import { tempDir } from '../../unit/agent/temp-dirs.js';
import type { NodeView, OperationView } from '../../../dispatcher/src/api/schemas.js';
import type { ImageView } from '../../../dispatcher/src/api/images/schemas.js';

const MACS = ['52:54:00:cd:00:01', '52:54:00:cd:00:02', '52:54:00:cd:00:03'];
const BACKGROUND_TASKS = 400;
const GOOD_HEALTH = 'test -d /proc';
const BAD_HEALTH = 'test -e /etc/lc-no-such-file';

let d: DispatcherProcess;
let machines: SimulatedMachine[];
let admin: Record<string, string>;
let library: string;
/** alpha's versions by what they are, and beta's one. */
const v = { v1: '', bad: '', v2: '', beta: '' };
/** The health check of each `name@version` (what /init would find in its root). */
const healthOf = new Map<string, string>();
let backgroundJob: number;

/** Writes one kept version of an image, as `make image` leaves it; returns its version. */
function addVersion(image: string, tag: string, health?: string): string {
  const inputs = createHash('sha256').update(`${image} ${tag}`).digest('hex');
  const version = inputs.slice(0, 12);
  const dir = join(library, image, 'versions', version);
  mkdirSync(dir, { recursive: true });
  const files = { vmlinuz: `${image} ${tag} kernel\n`, 'initrd.img': `${image} ${tag} initrd\n` };
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  const manifest = {
    inputs,
    files: Object.fromEntries(Object.entries(files).map(([n, t]) => [n, { size: t.length }])),
    ...(health ? { root: { health, size: 0, source: `test:${tag}` } } : {}),
  };
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
  if (health) healthOf.set(`${image}@${version}`, health);
  return version;
}

/** Keeps `versions` (newest last) and puts the newest's files flat, as a build does. */
function keep(image: string, versions: string[]): void {
  const dir = join(library, image);
  const newest = join(dir, 'versions', versions.at(-1)!);
  for (const name of ['vmlinuz', 'initrd.img', 'manifest.json']) copyFileSync(join(newest, name), join(dir, name));
  writeFileSync(join(dir, 'versions', 'order'), `${versions.join('\n')}\n`);
}

function sha256Of(image: string, version: string, name: string): string {
  return createHash('sha256')
    .update(readFileSync(join(library, image, 'versions', version, name)))
    .digest('hex');
}

async function ctl(...args: string[]): Promise<CtlRun> {
  return runCtl(args, admin, { timeoutMs: 120_000 });
}

async function ok(...args: string[]): Promise<string> {
  const r = await ctl(...args);
  expect(r.code, `dispatcherctl ${args.join(' ')}\n${r.stdout}\n${r.stderr}`).toBe(0);
  return r.stdout;
}

async function nodes(): Promise<NodeView[]> {
  return (JSON.parse(await ok('--json', 'nodes')) as { nodes: NodeView[] }).nodes;
}

async function images(): Promise<ImageView[]> {
  return (JSON.parse(await ok('--json', 'images')) as { images: ImageView[] }).images;
}

async function until<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const r = await probe();
    if (r !== undefined && r !== false) return r;
    if (Date.now() > end)
      throw new Error(
        `timed out waiting for ${what}\n${machines.map((m) => `${m.mac} ${m.history.join(',')}: ${m.output.slice(-1500)}`).join('\n')}\n${d.output().slice(-3000)}`,
      );
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The node once its agent is up and reported `label`. */
async function nodeOn(name: string, label: string, via?: 'kexec' | 'firmware'): Promise<NodeView> {
  return until(`${name} up on ${label}${via ? ` by ${via}` : ''}`, async () =>
    (await nodes()).find(
      (n) =>
        n.name === name &&
        n.connected &&
        (n.state === 'ready' || n.state === 'busy') &&
        n.imageVersion === label &&
        (!via || n.image.via === via),
    ),
  );
}

async function bootLog(node: string): Promise<{ stages: { stage: string; detail: Record<string, unknown> | null }[] }[]> {
  return (JSON.parse(await ok('--json', 'boot-log', node, '--boots', '5')) as { boots: never[] }).boots;
}

/** Submits `count` tasks with `--image` and waits; returns the nodes they ran on. */
async function ranOn(image: string, count: number): Promise<Set<string>> {
  const params = join(library, `params-${image}.csv`);
  writeFileSync(params, `i\n${Array.from({ length: count }, (_, i) => i).join('\n')}\n`);
  // Ahead of the background job's queue.
  const out = await ok('submit', '--wait', '--priority', '10', '--image', image, '--params', params, '--', 'sh', '-c', 'echo {i}');
  const job = /(\d+)/.exec(out)![1]!;
  const rows = await results(Number(job));
  expect(rows.map((r) => r.state)).toEqual(Array(count).fill('done'));
  return new Set(rows.map((r) => r.result!.node!));
}

async function results(job: number): Promise<ResultLine[]> {
  const out = (await ok('--json', 'results', String(job))).trim();
  return out ? out.split('\n').map((l) => JSON.parse(l) as ResultLine) : [];
}

/** Waits until the catalog (re-read once a second) shows `version` as the newest of `image`. */
async function newestIs(image: string, version: string): Promise<void> {
  await until(`${image}@${version} the newest build`, async () => (await images()).find((i) => i.name === image)?.newest === version);
}

beforeAll(async () => {
  library = tempDir('lc-images-lib-');
  v.bad = addVersion('alpha', 'bad', BAD_HEALTH);
  v.v2 = addVersion('alpha', 'v2', GOOD_HEALTH);
  v.v1 = addVersion('alpha', 'v1', GOOD_HEALTH);
  keep('alpha', [v.v1]);
  v.beta = addVersion('beta', 'b1');
  keep('beta', [v.beta]);
  d = await startDispatcher({
    args: ['--images', library],
    cluster: `enrollment: auto\nnodes:\n${MACS.map((mac, i) => `  - name: node${i + 1}\n    mac: ${mac}\n    image: ${i < 2 ? 'alpha' : 'beta'}\n`).join('')}`,
  });
  admin = { ...baseEnv(d.url), LILCLUSTER_TOKEN: d.token };
  machines = MACS.map(
    (mac) =>
      new SimulatedMachine({
        dispatcherUrl: d.url,
        mac,
        pubKeyFile: d.pubKeyFile,
        slots: 2,
        postMs: 50,
        images: true,
        rootHealth: (image) => healthOf.get(image),
      }),
  );
  for (const m of machines) m.powerOn();
  await nodeOn('node1', `alpha@${v.v1}`);
  await nodeOn('node2', `alpha@${v.v1}`);
  await nodeOn('node3', `beta@${v.beta}`);
}, 60_000);

afterAll(async () => {
  await Promise.all((machines ?? []).map((m) => m.stop()));
  for (const m of machines ?? []) m.cleanup();
  await d?.stop();
});

describe('several images on simulated machines: kexec, rollout, rollback', () => {
  it('boots each node on its image by the firmware; --image tasks land only on nodes of that image', async () => {
    const all = await nodes();
    expect(all.map((n) => [n.name, n.image.via, n.image.health])).toEqual([
      ['node1', 'firmware', 'passed'],
      ['node2', 'firmware', 'passed'],
      ['node3', 'firmware', 'none'],
    ]);
    // Short tasks, needing no image, through everything below.
    const params = join(library, 'background.csv');
    writeFileSync(params, `i\n${Array.from({ length: BACKGROUND_TASKS }, (_, i) => i).join('\n')}\n`);
    const bg = await ok('submit', '--name', 'background', '--params', params, '--', 'sh', '-c', 'sleep 0.5; echo task {i}');
    backgroundJob = Number(/(\d+)/.exec(bg)![1]);

    expect(await ranOn('beta', 4)).toEqual(new Set(['node3']));
    expect([...(await ranOn('alpha', 8))].sort()).toEqual(['node1', 'node2']);
    const nosuch = await ctl('--json', 'submit', '--image', 'nosuch', '--', 'true');
    expect(nosuch.code).not.toBe(0);
    expect((JSON.parse(nosuch.stdout) as { error: { code: string } }).error.code).toBe('DSP_ERR_IMAGE_NOT_FOUND');
    expect(nosuch.stderr).toMatch(/no image named "nosuch"/);
  });

  it('set --image and a reboot move a node onto another image by kexec, with the files it was planned', async () => {
    const m3 = machines[2]!;
    const boots = m3.boots;
    await ok('set', 'node3', '--image', 'alpha');
    expect((await nodes()).find((n) => n.name === 'node3')!.image.next).toBe(`alpha@${v.v1}`);
    expect(await ok('reboot', 'node3')).toMatch(new RegExp(`by kexec into alpha@${v.v1}`));
    await until('node3 kexec-booted', async () => m3.kexecBoots === 1);
    const n3 = await nodeOn('node3', `alpha@${v.v1}`, 'kexec');
    expect(n3.image.health).toBe('passed');
    expect(m3.boots).toBe(boots); // no boot script fetched
    expect(m3.history.at(-1)).toBe('kexec');
    // The agent fetched the planned files and checked them; kexec got exactly those bytes.
    const load = m3.kexecLoads.at(-1)!;
    expect(load.argv).toMatch(/^-c -i -l \S+\/vmlinuz --initrd=\S+\/initrd\.img --command-line=/);
    expect(load.cmdline).toMatch(new RegExp(`(^| )lc\\.image=alpha@${v.v1}( |$)`));
    expect(load.cmdline).toMatch(/(^| )lc\.via=kexec( |$)/);
    expect(load.kernel).toBe(sha256Of('alpha', v.v1, 'vmlinuz'));
    expect(load.initrd).toBe(sha256Of('alpha', v.v1, 'initrd.img'));
    // Only the machine's namespace saw that command line: the host's has no image, and its kexec never ran.
    expect(readFileSync('/proc/cmdline', 'utf8')).not.toMatch(/lc\.image=/);
    const last = (await bootLog('node3')).at(-1)!.stages.map((s) => s.stage);
    expect(last[0]).toBe('reboot.kexec');
    expect(last).toContain('agent.hello');
    expect(last).not.toContain('http.script');
  });

  it('--firmware, and a kexec that fails on the node, reboot through a boot script; the timeline says why', async () => {
    const m3 = machines[2]!;
    const cases: { args: string[]; said: RegExp; reason: RegExp }[] = [
      {
        args: ['reboot', 'node3', '--firmware'],
        said: /by firmware \(not kexec: the firmware path was asked for/,
        reason: /firmware path was asked for/,
      },
      { args: ['reboot', 'node3'], said: /by firmware \(not kexec: kexec failed on the node: /, reason: /LC_FAKE_KEXEC_FAIL/ },
    ];
    for (const [i, c] of cases.entries()) {
      m3.failKexec = i === 1;
      const boots = m3.boots;
      expect(await ok(...c.args)).toMatch(c.said);
      await until('node3 booted by a boot script', async () => m3.boots === boots + 1);
      await nodeOn('node3', `alpha@${v.v1}`, 'firmware');
      const log = await bootLog('node3');
      const before = log.at(-2)!.stages.at(-1)!;
      expect(before.stage).toBe('reboot.firmware');
      expect(String(before.detail?.reason)).toMatch(c.reason);
      expect(log.at(-1)!.stages.map((s) => s.stage)).toContain('http.script');
    }
    m3.failKexec = false;
    expect(m3.kexecBoots).toBe(1);
    expect(m3.history.slice(-2)).toEqual(['reboot', 'reboot']);
  });

  it('a rollout whose new version fails its health check stops at the canary and puts it back', async () => {
    keep('alpha', [v.v1, v.bad]);
    await newestIs('alpha', v.bad);
    const r = await ctl('images', 'rollout', 'alpha');
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toMatch(/health check failed/);
    expect(r.stdout).toMatch(/reverted/);
    for (const name of ['node1', 'node2', 'node3']) await nodeOn(name, `alpha@${v.v1}`);
    // Exactly one machine went to `bad` (the canary), by kexec, and came back by kexec.
    const toBad = machines.filter((m) => m.kexecLoads.some((l) => l.cmdline.includes(`lc.image=alpha@${v.bad}`)));
    expect(toBad).toHaveLength(1);
    expect(toBad[0]!.kexecLoads.at(-1)!.cmdline).toContain(`lc.image=alpha@${v.v1}`);
    const alpha = (await images()).find((i) => i.name === 'alpha')!;
    expect(alpha.released).toBe(v.v1);
    expect(alpha.rollout).toMatchObject({ kind: 'rollout', state: 'reverted' });
    expect(alpha.nodes.every((n) => n.running === `alpha@${v.v1}` && n.stale)).toBe(true);
  });

  it('a good rollout moves every node of the image, the canary first; rollback brings them back', async () => {
    keep('alpha', [v.v1, v.bad, v.v2]);
    await newestIs('alpha', v.v2);
    await ok('images', 'rollout', 'alpha', '--batch', '2');
    for (const name of ['node1', 'node2', 'node3']) await nodeOn(name, `alpha@${v.v2}`, 'kexec');
    let alpha = (await images()).find((i) => i.name === 'alpha')!;
    expect(alpha.released).toBe(v.v2);
    expect(alpha.newest).toBe(v.v2);
    expect(alpha.nodes.map((n) => [n.name, n.running, n.stale])).toEqual(
      ['node1', 'node2', 'node3'].map((name) => [name, `alpha@${v.v2}`, false]),
    );
    const [canary, rest] = await Promise.all(
      alpha.rollout!.operations.map((id) => d.api<OperationView>('GET', `/api/v1/operations/${id}`)),
    );
    expect(canary!.nodes).toHaveLength(1);
    expect(rest!.nodes).toHaveLength(2);
    expect(rest!.nodes.map((n) => n.name)).not.toContain(canary!.nodes[0]!.name);
    expect([...canary!.nodes, ...rest!.nodes].every((n) => n.phase === 'back')).toBe(true);
    expect((await ranOn('alpha', 6)).size).toBeGreaterThan(0);

    await ok('images', 'rollback', 'alpha', '--batch', '2');
    for (const name of ['node1', 'node2', 'node3']) await nodeOn(name, `alpha@${v.v1}`, 'kexec');
    alpha = (await images()).find((i) => i.name === 'alpha')!;
    expect(alpha.released).toBe(v.v1);
    expect(alpha.rollout).toMatchObject({ kind: 'rollback', state: 'done' });
    // A second rollback has nothing to go back to (it must not go forward to the version just left).
    expect(alpha.previous).toBeNull();
    const again = await ctl('images', 'rollback', 'alpha');
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/no earlier release to go back to/);
    // The background job ran through every reboot above (else it proved nothing about them).
    expect((await results(backgroundJob)).filter((r) => r.state === 'done').length).toBeLessThan(BACKGROUND_TASKS);
  });

  it('lost no task of the job that ran throughout, and recorded none twice', async () => {
    const rows = await until(
      'the background job done',
      async () => {
        const r = await results(backgroundJob);
        return r.length === BACKGROUND_TASKS && r.every((x) => x.state === 'done') && r;
      },
      60_000,
    );
    expect(new Set(rows.map((r) => r.taskId)).size).toBe(BACKGROUND_TASKS);
    expect(rows.map((r) => r.result!.stdout).sort()).toEqual(Array.from({ length: BACKGROUND_TASKS }, (_, i) => `task ${i}\n`).sort());
    expect(rows.every((r) => r.result!.exitCode === 0)).toBe(true);
  });
});
