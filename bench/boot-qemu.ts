/**
 * Real boots (part of `make bench-boot`): bare QEMU machines (TCG) PXE-boot the RAM image from
 * the dispatcher, 1 and 4 at once, under SeaBIOS + iPXE ROM and under OVMF (UEFI PXE → TFTP
 * ipxe.efi → HTTP). The figure is power-on (QEMU start) → the `agent.hello` stage on the
 * machine's boot timeline (GET /api/v1/boots?mac=...), in seconds; the stages between are
 * printed too, so the time spent in firmware, DHCP, TFTP, HTTP and Linux can be told apart.
 *
 *   QEMU_SETS="bios:1 bios:4 uefi:1 uefi:4" node dist/bench/boot-qemu.mjs
 *   QEMU_CAPTURE=1 ...            also write each set's frames to <out>/qemu-<set>.pcapng (tshark)
 *
 * Prints per set:
 *   RESULT name=qemu-boot firmware=<bios|uefi> machines=<n> hello_s_median=<s> hello_s_max=<s> ...
 * Everything runs in a network namespace of its own (test/lab); the lab removes it on exit.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLab, type Lab, type LabProcess, type Netns } from '../test/lab/netns.js';
import { QemuMachine, type Firmware } from '../test/lab/qemu.js';

const SERVER = '10.62.0.1';
const API = `http://${SERVER}:8080`;
const SETS = (process.env.QEMU_SETS ?? 'bios:1 bios:4 uefi:1 uefi:4').split(/\s+/).filter(Boolean);
const OUT = process.env.BOOT_BENCH_OUT ?? mkdtempSync(join(tmpdir(), 'lc-bench-qemu-'));
/** TCG, 4 machines on 2 shared cores: generous. */
const BOOT_TIMEOUT_MS = Number(process.env.QEMU_BOOT_TIMEOUT_MS ?? 900_000);
const MEMORY_MIB = Number(process.env.QEMU_MEMORY_MIB ?? 1024);
/** Stages whose first time after power-on is reported (seconds). */
const MILESTONES = ['dhcp.discover', 'dhcp.ack', 'tftp.sent', 'http.script', 'http.kernel', 'http.initrd', 'agent.hello'] as const;

interface Stage {
  stage: string;
  ts: number;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length === 0 ? NaN : s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const fixed = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : 'nan');

/** Every stage of every recent boot of these MACs, read inside the namespace (one node process). */
async function stagesOf(srv: Netns, macs: string[]): Promise<Map<string, Stage[]>> {
  const script = `
    const macs = ${JSON.stringify(macs)};
    const out = {};
    for (const m of macs) {
      const r = await fetch(${JSON.stringify(API)} + '/api/v1/boots?mac=' + m + '&boots=5');
      const j = r.ok ? await r.json() : { boots: [] };
      out[m] = (j.boots ?? []).flatMap((b) => b.stages.map((s) => ({ stage: s.stage, ts: s.ts })));
    }
    process.stdout.write(JSON.stringify(out));`;
  const r = await srv.exec(process.execPath, ['--input-type=module', '-e', script], { timeoutMs: 30_000, allowFailure: true });
  const parsed = r.code === 0 ? (JSON.parse(r.stdout) as Record<string, Stage[]>) : {};
  return new Map(Object.entries(parsed));
}

async function runSet(
  lab: Lab,
  srv: Netns,
  bridge: Awaited<ReturnType<Lab['bridge']>>,
  firmware: Firmware,
  count: number,
  setNo: number,
): Promise<void> {
  const machines: QemuMachine[] = [];
  // QEMU_CAPTURE=1: every frame on the bridge, for reading the firmware's waits afterwards.
  const capture =
    process.env.QEMU_CAPTURE === '1'
      ? srv.spawn('tshark', ['-q', '-i', bridge.name, '-w', join(OUT, `qemu-${firmware}${count}.pcapng`)])
      : undefined;
  if (capture) await sleep(2000); // tshark needs a moment before it captures
  const macs = Array.from(
    { length: count },
    (_, i) => `52:54:00:62:${setNo.toString(16).padStart(2, '0')}:${(i + 1).toString(16).padStart(2, '0')}`,
  );
  try {
    // All at once, as a rack powering on.
    for (const [i, mac] of macs.entries()) {
      const tap = await lab.tap(srv, { bridge });
      machines.push(
        await QemuMachine.start({
          name: `${firmware}${count}-${i + 1}`,
          firmware,
          boot: { kind: 'pxe' },
          nics: [{ net: { kind: 'tap', ifname: tap.name }, mac }],
          memoryMiB: MEMORY_MIB,
          consoleLog: join(OUT, `qemu-${firmware}${count}-${i + 1}.console.log`),
          netns: srv.name,
        }),
      );
    }
    const started = new Map(macs.map((m, i) => [m, machines[i]!.startedAt]));
    const deadline = Date.now() + BOOT_TIMEOUT_MS;
    let stages = new Map<string, Stage[]>();
    for (;;) {
      stages = await stagesOf(srv, macs);
      const done = macs.filter((m) => (stages.get(m) ?? []).some((s) => s.stage === 'agent.hello' && s.ts >= started.get(m)!));
      if (done.length === macs.length) break;
      if (Date.now() > deadline) {
        console.log(
          `RESULT name=qemu-boot firmware=${firmware} machines=${count} hello_s_median=nan reached=${done.length} timeout_s=${BOOT_TIMEOUT_MS / 1000}`,
        );
        return;
      }
      await sleep(2000);
    }
    // Per machine: the first time each milestone was reached after power-on.
    const at = (mac: string, stage: string) => {
      const t0 = started.get(mac)!;
      const s = (stages.get(mac) ?? []).filter((x) => x.stage === stage && x.ts >= t0).sort((a, b) => a.ts - b.ts)[0];
      return s ? (s.ts - t0) / 1000 : NaN;
    };
    for (const mac of macs)
      console.log(`  ${firmware} ×${count} ${mac}: ${MILESTONES.map((st) => `${st} ${fixed(at(mac, st))}`).join(', ')} s`);
    const hello = macs.map((m) => at(m, 'agent.hello'));
    const fields = MILESTONES.filter((st) => st !== 'agent.hello' && !(firmware === 'bios' && st === 'tftp.sent'))
      .map((st) => `${st.replace('.', '_')}_s=${fixed(median(macs.map((m) => at(m, st))))}`)
      .join(' ');
    console.log(
      `RESULT name=qemu-boot firmware=${firmware} machines=${count} hello_s_median=${fixed(median(hello))} hello_s_max=${fixed(Math.max(...hello))} ${fields}`,
    );
  } finally {
    await Promise.all(machines.map((m) => m.stop().catch(() => undefined)));
    await capture?.stop('SIGINT');
  }
}

async function main(): Promise<void> {
  mkdirSync(OUT, { recursive: true });
  const lab = await createLab('bootbench');
  const dataDir = mkdtempSync(join(tmpdir(), 'lc-bench-qemu-data-'));
  let dispatcher: LabProcess | undefined;
  try {
    const srv = await lab.namespace('srv');
    const bridge = await lab.bridge(srv, { address: `${SERVER}/24` });
    dispatcher = srv.spawn(process.execPath, [
      'dist/bin/dispatcher.mjs',
      '--interface',
      bridge.name,
      '--dhcp',
      'full',
      '--range',
      '10.62.0.100-10.62.0.199',
      '--data-dir',
      dataDir,
      '--image',
      'dist/image',
      '--pxe-dir',
      'pxe/bin',
    ]);
    await dispatcher.waitForOutput(/dispatcher started/, 60_000);
    console.log(
      `== real boots: QEMU TCG, ${MEMORY_MIB} MiB, virtio-net; sets ${SETS.join(' ')}; load ${(await import('node:os'))
        .loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}`,
    );
    for (const [n, set] of SETS.entries()) {
      const [fw, count] = set.split(':');
      if ((fw !== 'bios' && fw !== 'uefi') || !(Number(count) >= 1)) throw new Error(`QEMU_SETS: "${set}" is not bios:N or uefi:N`);
      await runSet(lab, srv, bridge, fw, Number(count), n + 1);
    }
  } finally {
    if (dispatcher) {
      const { writeFileSync } = await import('node:fs');
      writeFileSync(join(OUT, 'qemu-dispatcher.log'), dispatcher.output());
    }
    await lab.cleanup();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(`boot-qemu: ${(err as Error)?.stack ?? String(err)}`);
    process.exit(1);
  },
);
