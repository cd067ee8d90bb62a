/**
 * Serial-over-LAN capture end to end: the real dispatcher (dist/) keeps a real `ipmitool sol
 * activate` on OpenIPMI's ipmi_sim, whose `sol` is a real QEMU machine's serial port. Powered
 * on through the dispatcher, the machine's firmware (SeaBIOS, told to use the serial port as
 * its screen) prints, and `dispatcherctl console node1 --serial` shows it. A second BMC's
 * serial port is a socket this test writes garbage into: the node's stored console stays
 * within the store's caps and lines stay bounded. The BMC password appears in no output, no
 * log line, no event and no process's argv.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDispatcher, type DispatcherProcess } from '../../lab/dispatcher.js';
import { baseEnv, runCtl, waitUntil, type CtlRun } from '../../lab/run-ctl.js';
import { IpmiBmc } from '../../lab/bmc.js';
import { freePort } from '../../lab/ports.js';
import type { ConsoleReply } from '../../../dispatcher/src/api/console/schemas.js';
import type { ClusterEvent } from '../../../dispatcher/src/api/schemas.js';
import { MAX_LINE_CHARS } from '../../../dispatcher/src/console/sol-lines.js';

const dir = mkdtempSync(join(tmpdir(), 'lc-sol-'));
// IPMI 2.0 passwords are at most 20 bytes (ipmi_sim keeps 16).
const PASSWORD = `so${randomBytes(7).toString('hex')}`;

let d: DispatcherProcess;
let admin: Record<string, string>;
let bmc: IpmiBmc;
let garbageBmc: IpmiBmc;
let serialPort: Server;
let serialPeer: Socket | undefined;
const said: string[] = [];
let cluster: string;

async function ctl(...args: string[]): Promise<CtlRun> {
  const r = await runCtl(args, admin, { timeoutMs: 30_000 });
  said.push(r.stdout, r.stderr);
  return r;
}

async function until<T>(what: string, probe: () => Promise<T | undefined | null | false>, timeoutMs: number): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== null && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const solEvents = async (node: string) =>
  (await d.api<{ events: ClusterEvent[] }>('GET', `/api/v1/events?kind=node.console&limit=1000`)).events.filter((e) => e.node === node);

/** The `ipmitool … sol activate` processes running now for this file's BMCs (other tests may run theirs). */
function solSessions(): { pid: number; argv: string[] }[] {
  const ports = [bmc, garbageBmc].map((b) => String(b.opts.lanPort));
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .map((p) => {
      try {
        return { pid: Number(p), argv: readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0') };
      } catch {
        return { pid: Number(p), argv: [] };
      }
    })
    .filter(
      (s) =>
        s.argv[0]?.endsWith('ipmitool') &&
        s.argv.includes('activate') &&
        ports.includes(s.argv[s.argv.indexOf('-p') + 1] ?? '') &&
        running(s.pid),
    );
}

/** Whether a process exists and is not a zombie. */
function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

beforeAll(async () => {
  // SeaBIOS draws its screen on the serial port when fw_cfg names it (etc/sercon-port = 0x3f8);
  // with nothing to boot it restarts every second, so its banner comes again and again.
  const sercon = join(dir, 'sercon-port');
  writeFileSync(sercon, Buffer.from([0xf8, 0x03]));
  bmc = await IpmiBmc.start({
    name: 'node1',
    lanPort: await freePort('udp'),
    vmPort: await freePort('tcp'),
    solPort: await freePort('tcp'),
    password: PASSWORD,
    machine: { extraArgs: ['-fw_cfg', `name=etc/sercon-port,file=${sercon}`, '-boot', 'reboot-timeout=1000'] },
  });
  // node3's "machine" is this socket: ipmi_sim connects its SOL to it, the test writes what it likes.
  serialPort = createServer((s) => {
    serialPeer = s;
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => serialPort.listen(0, '127.0.0.1', r));
  garbageBmc = await IpmiBmc.start({
    name: 'node3',
    lanPort: await freePort('udp'),
    vmPort: await freePort('tcp'),
    solPort: (serialPort.address() as { port: number }).port,
    password: PASSWORD,
  });
  const pw = join(dir, 'bmc.pw');
  writeFileSync(pw, `${PASSWORD}\n`, { mode: 0o600 });
  const ipmi = (b: IpmiBmc, extra = '') =>
    `    bmc: {type: ipmi, address: "127.0.0.1:${b.opts.lanPort}", user: admin, passwordFile: ${pw}${extra}}\n`;
  cluster =
    'nodes:\n' +
    `  - name: node1\n    mac: 52:54:00:00:15:01\n${ipmi(bmc)}` +
    // The same BMC with capture off: no second session fighting node1's for the one SOL payload.
    `  - name: node2\n    mac: 52:54:00:00:15:02\n${ipmi(bmc, ', sol: false')}` +
    `  - name: node3\n    mac: 52:54:00:00:15:03\n${ipmi(garbageBmc)}`;
  d = await startDispatcher({ cluster, logLevel: 'debug' });
  admin = { ...baseEnv(d.url), LILCLUSTER_TOKEN: d.token };
}, 60_000);

afterAll(async () => {
  await d?.stop();
  await bmc?.stop();
  await garbageBmc?.stop();
  serialPeer?.destroy();
  serialPort?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('Serial-over-LAN capture (ipmitool → ipmi_sim → QEMU serial port)', () => {
  it("shows the machine's firmware output under the node, by source", async () => {
    const started = await until(
      'node1 capturing',
      async () => (await solEvents('node1')).find((e) => e.data?.state === 'capturing'),
      30_000,
    );
    expect(started.message).toBe(`node1: serial console captured by Serial-over-LAN through the ipmi BMC 127.0.0.1:${bmc.opts.lanPort}`);
    expect((await ctl('power', 'on', 'node1')).code).toBe(0);
    await bmc.waitPower('on');
    // ipmi_sim connects to the serial port within 10 s of the machine's start; SeaBIOS prints again every second.
    const r = await until(
      'SeaBIOS on the serial console',
      async () => {
        const c = await ctl('console', 'node1', '--serial');
        return /serial {2}SeaBIOS \(version [^)]+\)\n/.test(c.stdout) && c;
      },
      60_000,
    );
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/serial {2}(No bootable device|Booting from|Press ESC)/);
    expect(r.stdout).not.toMatch(/\x1b|\r|SOL Session operational/);

    const all = await d.api<ConsoleReply>('GET', '/api/v1/nodes/node1/console?limit=10000');
    expect(all.lines.length).toBeGreaterThan(0);
    expect(new Set(all.lines.map((l) => l.source))).toEqual(new Set(['serial']));
    const kernel = await ctl('console', 'node1', '--kernel');
    expect(kernel.stdout).toBe('node1: no console lines captured yet\n');
    const both = await ctl('console', 'node1', '--kernel', '--serial');
    expect(both.code).not.toBe(0);
    expect(both.stderr).toMatch(/cannot be used with option '-s, --serial'|--serial/);
    const refused = await fetch(`${d.url}/api/v1/nodes/node1/console?kernel=true&serial=true`, {
      headers: { authorization: `Bearer ${d.token}` },
    });
    expect(refused.status).toBe(400);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('DSP_ERR_BAD_REQUEST');

    // sol: false: no session, so node2 has no events and no lines.
    expect(await solEvents('node2')).toEqual([]);
    expect((await d.api<ConsoleReply>('GET', '/api/v1/nodes/node2/console')).lines).toEqual([]);
  }, 120_000);

  it('a garbage serial stream is bounded: lines cut, the store within its caps', async () => {
    await until('node3 capturing', async () => (await solEvents('node3')).find((e) => e.data?.state === 'capturing'), 30_000);
    const peer = await until('ipmi_sim connected to the serial socket', async () => serialPeer, 20_000);
    // Binary noise, escape sequences without end, a line far longer than any bound, no newline at all.
    const parts = [
      randomBytes(200_000),
      Buffer.from(`\x1b[${'7;'.repeat(50_000)}`),
      Buffer.from('\x1b]'.repeat(10_000)),
      Buffer.alloc(600_000, 'A'),
      randomBytes(400_000),
    ];
    for (const p of parts) if (!peer.write(p)) await new Promise((r) => peer.once('drain', r));
    // Over the node's line budget, most of it is dropped; once the flood is through, a line
    // gets in again, after the one that says how many were lost.
    const reply = await until(
      'a line after the garbage',
      async () => {
        peer.write('\r\nthe end of the garbage\r\n');
        const r = await d.api<ConsoleReply>('GET', '/api/v1/nodes/node3/console?limit=10000');
        return r.lines.some((l) => l.text === 'the end of the garbage') && r;
      },
      90_000,
    );
    expect(reply.stored.bytes).toBeGreaterThan(reply.stored.maxBytes / 4);
    expect(reply.lines.some((l) => /^\[lilcluster: \d+ serial console lines dropped: over 200 lines\/s\]$/.test(l.text))).toBe(true);
    expect(reply.stored.bytes).toBeLessThanOrEqual(reply.stored.maxBytes);
    expect(reply.stored.lines).toBeLessThanOrEqual(reply.stored.maxLines);
    for (const l of reply.lines) {
      expect(l.text.length).toBeLessThanOrEqual(MAX_LINE_CHARS + 1);
      expect(l.text).not.toMatch(/[\u0000-\u0008\u000a-\u001f\u007f]/);
    }
    // Capture latency, serial port → stored (a line's ts is when the dispatcher filed it): median of 5.
    const latencies: number[] = [];
    for (let i = 0; i < 5; i++) {
      const text = `latency probe ${i}`;
      const sent = Date.now();
      peer.write(`${text}\r\n`);
      const line = await until(
        text,
        async () => (await d.api<ConsoleReply>('GET', '/api/v1/nodes/node3/console?limit=20')).lines.find((l) => l.text === text),
        10_000,
      );
      latencies.push(line.ts - sent);
    }
    const median = latencies.sort((a, b) => a - b)[2]!;
    console.info(`SOL capture latency, serial port → stored: median ${median} ms of ${JSON.stringify(latencies)}`);
    expect(median).toBeLessThan(2000);
    // The rest of the cluster is served meanwhile.
    expect((await ctl('console', 'node1', '--serial', '-n', '1')).code).toBe(0);
  }, 120_000);

  it('a killed dispatcher leaves no ipmitool behind; the next one has the lines and captures again', async () => {
    const last = (await d.api<ConsoleReply>('GET', '/api/v1/nodes/node1/console?serial=true&limit=1')).lines.at(-1)!;
    const lastEvent = (await solEvents('node1')).at(-1)!;
    const pids = solSessions().map((s) => s.pid);
    expect(pids).toHaveLength(2);
    said.push(d.output(), d.stderr(), JSON.stringify(d.logs));
    await d.stop('SIGKILL');
    // Their stdin was the dead dispatcher's pipe: at its end, ipmitool ends its session.
    await waitUntil('the orphaned ipmitools gone', () => pids.every((p) => !running(p)), 15_000);
    d = await startDispatcher({ cluster, dataDir: d.dataDir, logLevel: 'debug' });
    admin = { ...baseEnv(d.url), LILCLUSTER_TOKEN: d.token };
    const kept = await d.api<ConsoleReply>('GET', '/api/v1/nodes/node1/console?serial=true&limit=10000');
    expect(kept.lines.map((l) => l.id)).toContain(last.id);
    await until(
      'capturing again',
      async () => (await solEvents('node1')).find((e) => e.id > lastEvent.id && e.data?.state === 'capturing'),
      30_000,
    );
    const again = await until(
      'new SeaBIOS lines',
      async () =>
        (await d.api<ConsoleReply>('GET', `/api/v1/nodes/node1/console?serial=true&after=${last.id}`)).lines.find((l) =>
          l.text.startsWith('SeaBIOS (version'),
        ),
      60_000,
    );
    expect(again.id).toBeGreaterThan(last.id);
  }, 120_000);

  it('the password is in no output, log line, event or process argv', async () => {
    const ipmitools = solSessions().map((s) => s.argv);
    expect(ipmitools).toHaveLength(2);
    for (const argv of ipmitools) {
      expect(argv).toContain('-f');
      expect(argv.join(' ')).not.toContain(PASSWORD);
    }
    const texts = [...said, d.output(), d.stderr(), JSON.stringify(d.logs), await d.text('/api/v1/events?limit=10000')];
    for (const t of texts) expect(t).not.toContain(PASSWORD);
    expect(d.logs.some((l) => l.msg === 'serial console capture (SOL) started')).toBe(true);
  });
});
