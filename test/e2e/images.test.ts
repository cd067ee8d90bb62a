/**
 * Several images, rollout and rollback, kexec (issue 13, points 4-6), end to end under QEMU.
 *
 * One dispatcher in a namespace, two SeaBIOS machines PXE-booting from it (test/lab/pxe-lab.ts).
 * Two images: `default` (the base image the e2e tests share) and `e2e-v`, a tiny container root (busybox)
 * built three times into one folder, so it has three kept versions:
 *
 *   good1   /etc/ok present, health check `test -e /etc/ok`        released first
 *   bad     the same root, health check `test -e /etc/missing`     fails on the node
 *   good2   /etc/which says good2, health check passes
 *
 * Re-running a build with the inputs of a kept version makes it the newest again without
 * rebuilding (image/src/versions.ts), which is how the test picks what a rollout rolls out.
 * A job of short tasks that require no image runs throughout: no task may be lost.
 *
 *   1. node1 boots e2e-v (cluster file), node2 boots default; `--image` tasks land only on the
 *      right node; `dispatcherctl images` lists both images and their nodes.
 *   2. kexec failing on node2 (its kexec binary moved away, on the base image where `exec` runs
 *      outside any container root): `set node2 --image e2e-v` + `reboot node2` falls back to
 *      the firmware (PXE), the timeline says why, and node2 comes back on e2e-v. A second
 *      reboot goes through kexec: the last boot starts with reboot.kexec, the hello says so.
 *   3. `images rollout e2e-v` to `bad`: the canary fails its health check, goes back to good1,
 *      the rollout says why; the release did not move.
 *   4. `images rollout e2e-v` to `good2`: both nodes on good2.
 *   5. `images rollback e2e-v`: both nodes back on good1.
 *   6. The background job: every task done, once.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildForE2e, E2E_IMAGE, PxeLab } from '../lab/pxe-lab.js';

const TIMEOUT_MS = 600_000;
const IMAGE = 'e2e-v';
const LIBRARY = 'dist/e2e-images';
const MACS = ['52:54:00:67:00:01', '52:54:00:67:00:02'];
const BACKGROUND_TASKS = 60;

interface NodeView {
  name: string;
  mac: string;
  state: string;
  imageVersion: string | null;
  image: { image: string; next: string | null; stale: boolean; health: string | null; via: string | null };
}

let rack: PxeLab;
let work: string;
/** The three versions of e2e-v, by what they are. */
const versions: Record<'good1' | 'bad' | 'good2', string> = {} as never;
let backgroundJob: string;

function sh(cmd: string, args: string[], env: Record<string, string> = {}): string {
  return execFileSync(cmd, args, {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ...env },
    maxBuffer: 64 << 20,
  });
}

const ctl = (...args: string[]) => rack.ctl(...args);

async function ok(...args: string[]): Promise<string> {
  const r = await ctl(...args);
  expect(r.code, `dispatcherctl ${args.join(' ')}\n${r.stdout}\n${r.stderr}`).toBe(0);
  return r.stdout;
}

async function nodes(): Promise<NodeView[]> {
  return (await rack.nodes()) as unknown as NodeView[];
}

const until = <T>(what: string, probe: () => Promise<T | undefined>) => rack.until(what, probe, TIMEOUT_MS, 2000);

/** The node of a MAC once its agent is up on `version` of its image (or any, without one). */
async function nodeOn(mac: string, label?: string): Promise<NodeView> {
  return until(`${mac} ready${label ? ` on ${label}` : ''}`, async () =>
    (await nodes()).find((n) => n.mac === mac && (n.state === 'ready' || n.state === 'busy') && (!label || n.imageVersion === label)),
  );
}

/** One task with `--image`; returns the node it ran on and its stdout. */
async function runOn(image: string, argv: string[]): Promise<{ node: string; stdout: string }> {
  // Ahead of the background job's queued tasks.
  const out = await ok('submit', '--wait', '--priority', '10', '--image', image, '--timeout', '300', '--', ...argv);
  const job = /(\d+)/.exec(out)![1]!;
  const line = JSON.parse((await ok('--json', 'results', job)).trim().split('\n')[0]!) as {
    result: { exitCode: number; stdout: string; node: string | null } | null;
  };
  expect(line.result?.exitCode, JSON.stringify(line)).toBe(0);
  return { node: line.result!.node ?? '', stdout: line.result!.stdout };
}

/** A tiny container root: busybox, a few applets, /etc/which naming the build. */
function ociRoot(): string {
  const layout = join(work, 'layout');
  const bundle = join(work, 'bundle');
  sh('umoci', ['init', '--layout', layout]);
  sh('umoci', ['new', '--image', `${layout}:base`]);
  for (const tag of ['good1', 'good2']) {
    sh('umoci', ['unpack', '--image', `${layout}:base`, bundle]);
    const root = join(bundle, 'rootfs');
    mkdirSync(join(root, 'bin'), { recursive: true });
    mkdirSync(join(root, 'etc'), { recursive: true });
    copyFileSync('/bin/busybox', join(root, 'bin/busybox'));
    chmodSync(join(root, 'bin/busybox'), 0o755);
    for (const applet of ['sh', 'cat', 'sleep', 'echo', 'ls', 'test']) symlinkSync('busybox', join(root, 'bin', applet));
    writeFileSync(join(root, 'etc/ok'), 'ok\n');
    writeFileSync(join(root, 'etc/which'), `${tag}\n`);
    sh('umoci', ['repack', '--image', `${layout}:${tag}`, bundle]);
    sh('umoci', ['config', '--image', `${layout}:${tag}`, '--config.env', 'PATH=/bin']);
    rmSync(bundle, { recursive: true, force: true });
  }
  return layout;
}

/** Builds (or re-selects, when its inputs are kept) a version of e2e-v; returns its version. */
function buildVersion(layout: string, tag: string, health: string): string {
  sh('make', [
    '-s',
    'image',
    `FROM=oci:${layout}:${tag}`,
    `IMAGE_OUT=${LIBRARY}/${IMAGE}`,
    `IMAGE=${IMAGE}`,
    'ZSTD_LEVEL=3',
    `HEALTH_CHECK=${health}`,
  ]);
  // The flat files are the newest build's.
  return (JSON.parse(readFileSync(join(LIBRARY, IMAGE, 'manifest.json'), 'utf8')) as { inputs: string }).inputs.slice(0, 12);
}

async function bootLog(node: string): Promise<{ boot: number; stages: { stage: string; detail: Record<string, unknown> | null }[] }[]> {
  return (JSON.parse(await ok('--json', 'boot-log', node)) as { boots: never[] }).boots;
}

beforeAll(async () => {
  buildForE2e();
  work = mkdtempSync(join(tmpdir(), 'lc-images-e2e-'));
  rmSync(join(LIBRARY, IMAGE), { recursive: true, force: true });
  const layout = ociRoot();
  // Built in this order, so good1 is the newest (released when the dispatcher first sees it).
  versions.bad = buildVersion(layout, 'good1', 'test -e /etc/missing');
  versions.good2 = buildVersion(layout, 'good2', 'test -e /etc/ok');
  versions.good1 = buildVersion(layout, 'good1', 'test -e /etc/ok');
  (globalThis as { layout?: string }).layout = layout;

  rack = await PxeLab.create({ area: 'images', subnet: 67 });
  const machines = [];
  for (const [i, mac] of MACS.entries()) machines.push(await rack.machine({ name: `node${i + 1}`, mac }));
  await rack.startDispatcher({
    image: E2E_IMAGE,
    args: ['--images', LIBRARY],
    cluster: `enrollment: auto\nnodes:\n  - name: node1\n    mac: ${MACS[0]}\n    image: ${IMAGE}\n  - name: node2\n    mac: ${MACS[1]}\n`,
  });
  for (const m of machines) await m.powerOn();
}, 3_600_000);

afterAll(async () => {
  await rack?.cleanup();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('several images, rollout with canary, rollback, kexec', () => {
  it('boots each node on its image; --image tasks land only on the right node', async () => {
    const n1 = await nodeOn(MACS[0]!, `${IMAGE}@${versions.good1}`);
    const n2 = await nodeOn(MACS[1]!);
    expect(n1.name).toBe('node1');
    expect(n1.image).toMatchObject({ image: IMAGE, health: 'passed', stale: false });
    expect(n2.imageVersion).toMatch(/^default@[0-9a-f]{12}$/);
    // A job that needs no image, running through everything below.
    const bg = await ok('submit', '--name', 'background', '--timeout', '300', '--params', writeParams(), '--', 'sleep', '{s}');
    backgroundJob = /(\d+)/.exec(bg)![1]!;
    for (let i = 0; i < 3; i++) {
      const onV = await runOn(IMAGE, ['cat', '/etc/which']);
      expect(onV).toEqual({ node: 'node1', stdout: 'good1\n' });
      const onDefault = await runOn('default', ['sh', '-c', 'echo on the base image']);
      expect(onDefault.node).toBe('node2');
    }
    const list = await ok('images');
    expect(list).toMatch(new RegExp(`${IMAGE} .*\\n(.*\\n)*\\s+${versions.good1} \\*`));
    expect(list).toMatch(/nodes: node1 e2e-v@/);
    // Bad input: an image nobody builds, an image nobody runs.
    const unknown = await ctl('submit', '--image', 'nosuch', '--', 'true');
    expect(unknown.stderr).toMatch(/no image named "nosuch" is built/);
  });

  it('set --image and a reboot move a node onto another image; a failed kexec falls back to the firmware', async () => {
    await ok('exec', 'node2', '--', 'mv', '/usr/sbin/kexec', '/usr/sbin/kexec.off');
    await ok('set', 'node2', '--image', IMAGE);
    expect((await nodes()).find((n) => n.name === 'node2')!.image.next).toBe(`${IMAGE}@${versions.good1}`);
    const r = await ok('reboot', 'node2');
    expect(r).toMatch(/by firmware \(not kexec: kexec failed on the node/);
    const n2 = await nodeOn(MACS[1]!, `${IMAGE}@${versions.good1}`);
    expect(n2.image.via).toBe('firmware');
    const boots = await bootLog('node2');
    const before = boots.at(-2)!.stages;
    expect(before.at(-1)!.stage).toBe('reboot.firmware');
    expect(String(before.at(-1)!.detail?.reason)).toMatch(/kexec/);
    expect(boots.at(-1)!.stages.map((s) => s.stage)).toContain('http.script');
  });

  it('dispatcherctl reboot goes through kexec: no firmware, no PXE, and the timeline says so', async () => {
    const r = await ok('reboot', 'node2');
    expect(r).toMatch(/by kexec into e2e-v@/);
    await until('node2 rebooting', async () =>
      (await nodes()).find((n) => n.name === 'node2')?.image.via === 'firmware' ? undefined : true,
    );
    const n2 = await nodeOn(MACS[1]!, `${IMAGE}@${versions.good1}`);
    expect(n2.image.via).toBe('kexec');
    const last = (await bootLog('node2')).at(-1)!;
    expect(last.stages[0]!.stage).toBe('reboot.kexec');
    expect(last.stages.map((s) => s.stage)).toContain('agent.hello');
    expect(last.stages.map((s) => s.stage)).not.toContain('http.script');
  });

  it('a rollout whose new version fails its health check stops at the canary and puts it back', async () => {
    const layout = (globalThis as { layout?: string }).layout!;
    expect(buildVersion(layout, 'good1', 'test -e /etc/missing')).toBe(versions.bad);
    const r = await ctl('images', 'rollout', IMAGE);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toMatch(/health check failed/);
    expect(r.stdout).toMatch(/reverted/);
    for (const mac of MACS) await nodeOn(mac, `${IMAGE}@${versions.good1}`);
    const images = JSON.parse(await ok('--json', 'images')) as { images: { name: string; released: string }[] };
    expect(images.images.find((i) => i.name === IMAGE)!.released).toBe(versions.good1);
    // Both nodes run an older version than the newest build: stale.
    expect((await nodes()).every((n) => n.image.stale)).toBe(true);
  });

  it('a good rollout moves every node of the image; rollback brings them back', async () => {
    const layout = (globalThis as { layout?: string }).layout!;
    expect(buildVersion(layout, 'good2', 'test -e /etc/ok')).toBe(versions.good2);
    await ok('images', 'rollout', IMAGE, '--batch', '2');
    for (const mac of MACS) await nodeOn(mac, `${IMAGE}@${versions.good2}`);
    expect((await runOn(IMAGE, ['cat', '/etc/which'])).stdout).toBe('good2\n');
    await ok('images', 'rollback', IMAGE, '--batch', '2');
    for (const mac of MACS) await nodeOn(mac, `${IMAGE}@${versions.good1}`);
    expect((await runOn(IMAGE, ['cat', '/etc/which'])).stdout).toBe('good1\n');
  });

  it('lost no task of the job that ran throughout', async () => {
    const lines = await until('the background job done', async () => {
      const out = (await ok('--json', 'results', backgroundJob)).trim().split('\n');
      const rows = out.map((l) => JSON.parse(l) as { taskId: number; state: string; result: { exitCode: number } | null });
      return rows.length === BACKGROUND_TASKS && rows.every((x) => x.state === 'done') ? rows : undefined;
    });
    expect(new Set(lines.map((l) => l.taskId)).size).toBe(BACKGROUND_TASKS);
    expect(lines.every((l) => l.result?.exitCode === 0)).toBe(true);
  });
});

function writeParams(): string {
  const file = join(work, 'params.csv');
  writeFileSync(file, `s\n${Array.from({ length: BACKGROUND_TASKS }, () => '3').join('\n')}\n`);
  return file;
}
