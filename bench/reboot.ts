/**
 * Reboot figures (`make bench-reboot`), QEMU TCG: a reboot by kexec against one through the
 * firmware, and a rollout of 3 nodes both ways. Medians; each pair runs alternately, so both
 * ways see the same load.
 *
 *   RUNS=5 ROLLOUTS=2 node dist/bench/reboot.mjs
 *
 * One dispatcher in a network namespace (test/lab), three SeaBIOS machines (1 vCPU, 1 GiB)
 * PXE-booting from it, all assigned one image by the cluster file. The image is the small base
 * image (no container root), built twice into a library of its own with one file of
 * EXTRA_ROOTFS different, so it has two kept versions; re-running a build with a kept
 * version's inputs makes it the newest again in seconds (image/src/versions.ts), which is
 * how each rollout picks its target.
 *
 *   reboot:   `dispatcherctl reboot node1 [--firmware]` into its released version (a kexec
 *             fetches the kernel and initrd anew every time, so this is the path of a new
 *             version's files, without a rollout between runs): the command sent (host clock) → the
 *             `agent.hello` stage of the new boot on node1's timeline (the dispatcher's clock,
 *             the same host). Also from the dispatcher's reboot stage (reboot.kexec opens the
 *             new boot; reboot.firmware closes the old one) to the hello.
 *   rollout:  `dispatcherctl images rollout bench --canary 1 --batch 2 [--firmware]`, command
 *             to exit (it waits until the rollout is done), and the duration it prints.
 *
 * Prints `RESULT name=... key=value ...` lines; console and dispatcher logs go to
 * test/artifacts/reboot-* (test/lab/pxe-lab.ts).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { PxeLab } from '../test/lab/pxe-lab.js';

const RUNS = Number(process.env.RUNS ?? 5);
const ROLLOUTS = Number(process.env.ROLLOUTS ?? 2);
const MACHINES = 3;
const MEMORY_MIB = 1024;
const IMAGE = 'bench';
const LIBRARY = process.env.BENCH_IMAGES ?? 'dist/bench-images';
const MACS = Array.from({ length: MACHINES }, (_, i) => `52:54:00:68:00:0${i + 1}`);
/** TCG on 2 shared cores: generous. */
const BOOT_TIMEOUT_MS = Number(process.env.BOOT_TIMEOUT_MS ?? 1_200_000);
const POLL_MS = 1000;

type Via = 'kexec' | 'firmware';

interface NodeView {
  name: string;
  mac: string;
  state: string;
  imageVersion: string | null;
  image: { image: string; next: string | null; via: string | null; health: string | null };
}

interface Stage {
  stage: string;
  ts: number;
  detail: Record<string, unknown> | null;
}

let rack: PxeLab;

const fixed = (n: number, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : 'nan');
const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(',');
function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length === 0 ? NaN : s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}
function result(name: string, fields: Record<string, string | number | boolean>): void {
  console.log(
    `RESULT name=${name} ${Object.entries(fields)
      .map(([k, v]) => `${k}=${v}`)
      .join(' ')}`,
  );
}

async function ctl(args: string[]): Promise<string> {
  return rack.ok(...args);
}

const nodes = async () => (JSON.parse(await ctl(['--json', 'nodes'])) as { nodes: NodeView[] }).nodes;
const bootLog = async (node: string) => (JSON.parse(await ctl(['--json', 'boot-log', node])) as { boots: { stages: Stage[] }[] }).boots;

const until = <T>(what: string, probe: () => Promise<T | undefined>) => rack.until(what, probe, BOOT_TIMEOUT_MS, POLL_MS);

/** Every node of the image ready (or busy) on `version`, and when `via` is given, booted that way. */
async function allOn(version: string, via?: Via): Promise<NodeView[]> {
  return until(`${MACHINES} nodes ready on ${IMAGE}@${version}${via ? ` by ${via}` : ''}`, async () => {
    const ns = (await nodes()).filter((n) => MACS.includes(n.mac));
    const on = ns.filter((n) => (n.state === 'ready' || n.state === 'busy') && n.imageVersion === `${IMAGE}@${version}`);
    if (on.length < MACHINES) return undefined;
    return !via || on.every((n) => n.image.via === via) ? on : undefined;
  });
}

/** Builds (or re-selects, when its inputs are kept) the version whose /etc/bench-version says `tag`. */
function buildVersion(work: string, tag: string): string {
  const extra = join(work, `rootfs-${tag}`);
  mkdirSync(join(extra, 'etc'), { recursive: true });
  writeFileSync(join(extra, 'etc/bench-version'), `${tag}\n`);
  const t0 = Date.now();
  execFileSync('make', ['-s', 'image', `IMAGE_OUT=${LIBRARY}/${IMAGE}`, `IMAGE=${IMAGE}`, 'ZSTD_LEVEL=3', `EXTRA_ROOTFS=${extra}`], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const version = (JSON.parse(readFileSync(join(LIBRARY, IMAGE, 'manifest.json'), 'utf8')) as { inputs: string }).inputs.slice(0, 12);
  console.log(`-- ${IMAGE}@${version} (${tag}) newest after ${fixed((Date.now() - t0) / 1000)} s`);
  return version;
}

interface RebootRun {
  via: Via;
  /** Command sent → agent.hello (s). */
  helloS: number;
  /** The dispatcher's reboot stage → agent.hello (s). */
  stageS: number;
  /** Command sent → the dispatcher's reboot stage (s): for kexec, fetching and loading the files. */
  toStageS: number;
  /** The reply's "acknowledged in" (ms), as printed. */
  ack: string;
}

async function rebootOnce(node: string, via: Via, version: string, run: number): Promise<RebootRun> {
  const t0 = Date.now();
  const reply = await ctl(['reboot', node, ...(via === 'firmware' ? ['--firmware'] : [])]);
  const want = via === 'kexec' ? /by kexec into/ : /by firmware/;
  if (!want.test(reply)) throw new Error(`reboot ${node} ${via}: the reboot path was not taken: ${reply.trim()}`);
  const stages = await until(`${node}'s agent hello after the ${via} reboot`, async () => {
    const all = (await bootLog(node)).flatMap((b) => b.stages);
    return all.some((s) => s.stage === 'agent.hello' && s.ts >= t0) ? all.filter((s) => s.ts >= t0) : undefined;
  });
  const hello = stages.find((s) => s.stage === 'agent.hello')!;
  const rebootStage = stages.find((s) => s.stage === `reboot.${via}`);
  const pxe = stages.some((s) => s.stage === 'http.script');
  if (via === 'kexec' && pxe) console.log(`!! run ${run}: a kexec reboot went through PXE (http.script on the timeline)`);
  if (via === 'firmware' && !pxe) console.log(`!! run ${run}: a firmware reboot did not PXE-boot (no http.script on the timeline)`);
  // Ready again (health checked), on the same version, booted the asked way, before the next run.
  await until(`${node} ready after the ${via} reboot`, async () => {
    const n = (await nodes()).find((x) => x.name === node);
    return n && n.state === 'ready' && n.imageVersion === `${IMAGE}@${version}` && n.image.via === via ? n : undefined;
  });
  return {
    via,
    helloS: (hello.ts - t0) / 1000,
    stageS: rebootStage ? (hello.ts - rebootStage.ts) / 1000 : NaN,
    toStageS: rebootStage ? (rebootStage.ts - t0) / 1000 : NaN,
    ack: /acknowledged in ([\d.]+) ms/.exec(reply)?.[1] ?? '?',
  };
}

interface RolloutRun {
  via: Via;
  wallS: number;
  printed: string;
}

async function rolloutOnce(work: string, via: Via, tag: string): Promise<RolloutRun> {
  const version = buildVersion(work, tag);
  const t0 = Date.now();
  const out = await ctl(['images', 'rollout', IMAGE, '--canary', '1', '--batch', '2', ...(via === 'firmware' ? ['--firmware'] : [])]);
  const wallS = (Date.now() - t0) / 1000;
  const printed = /rollout of \S+ done in ([^:]+):/.exec(out)?.[1]?.replace(/\s+/g, '');
  if (!printed) throw new Error(`rollout to ${version} ${via}: no "done in" line\n${out}`);
  const on = await nodes();
  const wrong = on.filter((n) => MACS.includes(n.mac) && (n.imageVersion !== `${IMAGE}@${version}` || n.image.via !== via));
  if (wrong.length)
    console.log(`!! rollout ${via} to ${version}: ${wrong.map((n) => `${n.name} on ${n.imageVersion} via ${n.image.via}`).join(', ')}`);
  await allOn(version, via);
  return { via, wallS, printed };
}

async function main(): Promise<void> {
  const loadBefore = load();
  console.log(
    `== bench-reboot: ${MACHINES} QEMU TCG BIOS machines, ${MEMORY_MIB} MiB, 1 vCPU; RUNS=${RUNS} ROLLOUTS=${ROLLOUTS}; load ${loadBefore}`,
  );
  const work = mkdtempSync(join(tmpdir(), 'lc-bench-reboot-'));
  rmSync(join(LIBRARY, IMAGE), { recursive: true, force: true });
  // v2 first, so v1 is the newest and released when the dispatcher first sees the image.
  const v2 = buildVersion(work, 'v2');
  const v1 = buildVersion(work, 'v1');
  if (v1 === v2) throw new Error('the two builds made one version: EXTRA_ROOTFS did not reach the inputs');

  try {
    rack = await PxeLab.create({ area: 'reboot', subnet: 68 });
    const machines = [];
    for (const [i, mac] of MACS.entries()) machines.push(await rack.machine({ name: `node${i + 1}`, mac, memoryMiB: MEMORY_MIB }));
    await rack.startDispatcher({
      image: 'dist/image',
      args: ['--images', LIBRARY],
      cluster: `enrollment: auto\nnodes:\n${MACS.map((mac, i) => `  - name: node${i + 1}\n    mac: ${mac}\n    image: ${IMAGE}\n`).join('')}`,
    });
    const t0 = Date.now();
    for (const m of machines) await m.powerOn();
    await allOn(v1);
    console.log(`-- ${MACHINES} nodes ready on ${IMAGE}@${v1} after ${fixed((Date.now() - t0) / 1000)} s`);

    const reboots: RebootRun[] = [];
    for (let run = 1; run <= RUNS; run++)
      for (const via of ['kexec', 'firmware'] as const) {
        const r = await rebootOnce('node1', via, v1, run);
        reboots.push(r);
        result('reboot-run', {
          run,
          via,
          cmd_to_hello_s: fixed(r.helloS, 2),
          cmd_to_reboot_stage_s: fixed(r.toStageS, 2),
          reboot_stage_to_hello_s: fixed(r.stageS, 2),
          ack_ms: r.ack,
          load1: loadavg()[0]!.toFixed(2),
        });
      }
    const rebootMedian: Record<Via, number> = { kexec: NaN, firmware: NaN };
    for (const via of ['kexec', 'firmware'] as const) {
      const rs = reboots.filter((r) => r.via === via);
      rebootMedian[via] = median(rs.map((r) => r.helloS));
      result(`reboot-${via}`, {
        cmd_to_hello_median_s: fixed(rebootMedian[via], 2),
        min_s: fixed(Math.min(...rs.map((r) => r.helloS)), 2),
        max_s: fixed(Math.max(...rs.map((r) => r.helloS)), 2),
        cmd_to_reboot_stage_median_s: fixed(median(rs.map((r) => r.toStageS)), 2),
        reboot_stage_to_hello_median_s: fixed(median(rs.map((r) => r.stageS)), 2),
        runs: rs.length,
        accel: 'tcg',
      });
    }
    result('reboot-ratio', { kexec_over_firmware: fixed(rebootMedian.kexec / rebootMedian.firmware, 3) });

    // Each rollout moves the nodes to the other version; which way goes first alternates.
    const rollouts: RolloutRun[] = [];
    let next = 'v2';
    for (let run = 1; run <= ROLLOUTS; run++) {
      const order: Via[] = run % 2 ? ['kexec', 'firmware'] : ['firmware', 'kexec'];
      for (const via of order) {
        const r = await rolloutOnce(work, via, next);
        next = next === 'v2' ? 'v1' : 'v2';
        rollouts.push(r);
        result('rollout-run', { run, via, wall_s: fixed(r.wallS), printed: r.printed, load1: loadavg()[0]!.toFixed(2) });
      }
    }
    const rolloutMedian: Record<Via, number> = { kexec: NaN, firmware: NaN };
    for (const via of ['kexec', 'firmware'] as const) {
      const rs = rollouts.filter((r) => r.via === via);
      rolloutMedian[via] = median(rs.map((r) => r.wallS));
      result(`rollout-3-${via}`, {
        wall_median_s: fixed(rolloutMedian[via]),
        min_s: fixed(Math.min(...rs.map((r) => r.wallS))),
        max_s: fixed(Math.max(...rs.map((r) => r.wallS))),
        printed: rs.map((r) => r.printed).join(','),
        nodes: MACHINES,
        canary: 1,
        batch: 2,
        runs: rs.length,
        accel: 'tcg',
      });
    }
    result('rollout-3-ratio', { kexec_over_firmware: fixed(rolloutMedian.kexec / rolloutMedian.firmware, 3) });
    result('reboot-load', { before: loadBefore, after: load(), cpus: (await import('node:os')).cpus().length });
  } finally {
    await rack?.cleanup();
    if (rack) rmSync(rack.dataDir, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(`bench-reboot: ${(err as Error).message}`);
  process.exit(1);
});
