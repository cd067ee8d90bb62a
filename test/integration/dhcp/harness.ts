/**
 * DHCP integration harness (the dispatcher itself: test/lab/dispatcher.ts): the dhcp-probe
 * client bundled for `ip netns exec`, busybox udhcpc with a script that reports every event.
 */
import { build } from 'esbuild';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Netns } from '../../lab/netns.js';
import type { DoraResult, JsonPacket, ProbeSpec } from './dhcp-probe.js';

const ROOT = resolve(fileURLToPath(import.meta.url), '../../../..');
const PROBE_BIN = join(ROOT, 'dist/test/dhcp-probe.mjs');

const tempDirs: string[] = [];
/** A temp dir removed by removeTempDirs() (call it in afterAll). */
export function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.push(d);
  return d;
}
export function removeTempDirs(): void {
  for (const d of tempDirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

/** Bundles dhcp-probe.ts next to dist/bin so its bare imports resolve from node_modules. */
export async function buildProbe(): Promise<string> {
  await build({
    entryPoints: [join(ROOT, 'test/integration/dhcp/dhcp-probe.ts')],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node24',
    packages: 'external',
    outfile: PROBE_BIN,
    logLevel: 'warning',
  });
  return PROBE_BIN;
}

export interface ProbeReply {
  kind: 'reply';
  from: string;
  port: number;
  packet: JsonPacket & { type: string; yiaddr: string; xid: number };
}

/** Sends packets from `ns` and returns the replies seen within spec.waitMs. */
export async function probe(ns: Netns, spec: ProbeSpec): Promise<ProbeReply[]> {
  const r = await ns.exec(process.execPath, [PROBE_BIN, JSON.stringify(spec)], { timeoutMs: 60_000 });
  return r.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as ProbeReply | { kind: 'malformed' })
    .filter((x): x is ProbeReply => x.kind === 'reply');
}

/** Runs full exchanges for `count` MACs at once from `ns`. */
export async function probeDora(ns: Netns, spec: ProbeSpec): Promise<DoraResult[]> {
  const r = await ns.exec(process.execPath, [PROBE_BIN, JSON.stringify(spec)], { timeoutMs: 120_000 });
  const line = r.stdout.split('\n').find((l) => l.includes('"kind":"dora"'));
  if (!line) throw new Error(`dhcp-probe printed no result: ${r.stdout}${r.stderr}`);
  return (JSON.parse(line) as { results: DoraResult[] }).results;
}

/**
 * A udhcpc event script: prints `UDHCPC <event> ip=... ` lines and configures the address
 * (so renewals, unicast from the client's address, work).
 */
export function udhcpcScript(): string {
  const dir = tempDir('lc-udhcpc-');
  const file = join(dir, 'event.sh');
  writeFileSync(
    file,
    `#!/bin/sh
echo "UDHCPC $1 ip=$ip serverid=$serverid lease=$lease hostname=$hostname boot_file=$boot_file siaddr=$siaddr"
case "$1" in
  deconfig) ip -4 addr flush dev "$interface" ;;
  bound) ip -4 addr flush dev "$interface"; ip addr add "$ip/\${mask:-24}" dev "$interface" ;;
esac
exit 0
`,
  );
  chmodSync(file, 0o755);
  return file;
}

/** Events udhcpc reported so far: [{ event, ip, ... }]. */
export function udhcpcEvents(output: string): Record<string, string>[] {
  return output
    .split('\n')
    .filter((l) => l.startsWith('UDHCPC '))
    .map((l) => {
      const [, event, ...kv] = l.split(' ');
      return { event: event!, ...Object.fromEntries(kv.map((p) => [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)])) };
    });
}

/** Polls until `check` returns a value (not undefined/false) or the time runs out. */
export async function eventually<T>(check: () => T | undefined | false, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The kernel's UDP receive-buffer drops in a namespace (/proc/net/snmp Udp RcvbufErrors). */
export async function udpRcvbufErrors(ns: Netns): Promise<number> {
  const r = await ns.exec('cat', ['/proc/net/snmp']);
  const lines = r.stdout.split('\n').filter((l) => l.startsWith('Udp:'));
  const names = lines[0]!.split(/\s+/);
  const values = lines[1]!.split(/\s+/);
  return Number(values[names.indexOf('RcvbufErrors')]);
}
