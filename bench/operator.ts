/**
 * Operator-surface figures, against the real dispatcher process (dist/bin/dispatcher.mjs):
 *
 *   api_nodes      GET /api/v1/nodes with NODES registered and connected nodes (simulated
 *                  agents, idle: hello + heartbeats), sequential requests on one keep-alive
 *                  connection, as the page and the CLI make them. Target: median < 20 ms.
 *   live_feed      the page's live feed with those nodes: time from a change (PATCH a node's
 *                  labels) to the `update` event that carries it. Coalesced: ≤ 500 ms by design.
 *   control_ack    `reboot` to the agent's acknowledgement, on loopback, with real agents on
 *                  simulated machines (test/lab/simulated-machine.ts: real node-agent,
 *                  real power path, fake reboot in a PID/mount namespace; needs root). The
 *                  dispatcher's own measure (send → ack, ackMs in the answer) and the whole
 *                  HTTP round trip of `POST /reboot`. Target: median < 100 ms.
 *   reboot_back    reboot → the same node's agent connected again (boot script, new token).
 *
 *   bash bench/operator.sh                       # NODES=1000 REBOOTS=20 MACHINES=3
 * Prints `RESULT name=... median_ms=...` lines.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { runSimAgents } from './sim-agents.js';
import { parseDispatcherPublicKey } from '../dispatcher/src/protocol/session.js';
import { SimulatedMachine } from '../test/lab/simulated-machine.js';
import { SseParser } from '../dispatcher/src/api/sse.js';

const NODES = Number(process.env.NODES ?? 1000);
const REQUESTS = Number(process.env.REQUESTS ?? 200);
const REBOOTS = Number(process.env.REBOOTS ?? 20);
const MACHINES = Number(process.env.MACHINES ?? 3);
const FEED_CHANGES = Number(process.env.FEED_CHANGES ?? 20);
const ROOT = process.cwd();

function stats(xs: number[]) {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
  const r = (v: number) => Math.round(v * 100) / 100;
  return { median: r(q(0.5)), p90: r(q(0.9)), p99: r(q(0.99)), max: r(s.at(-1)!), n: s.length };
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 60_000,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function main(): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), 'lc-op-bench-'));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc = spawn(
    process.execPath,
    [
      join(ROOT, 'dist/bin/dispatcher.mjs'),
      '--dhcp',
      'off',
      '--no-tftp',
      '--http-port',
      String(port),
      '--http-host',
      '127.0.0.1',
      '--advertise-address',
      '127.0.0.1',
      '--data-dir',
      dataDir,
      '--log-level',
      'warn',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const stop = () => proc.kill('SIGTERM');
  process.on('exit', stop);
  try {
    await waitFor(
      'the dispatcher',
      async () =>
        await fetch(`${url}/healthz`).then(
          (r) => r.ok,
          () => false,
        ),
      20_000,
    );
    const token = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
    const auth = { authorization: `Bearer ${token}` };
    const hasHub = (await fetch(`${url}/api/v1/agent`)).status !== 404;

    // ---- NODES nodes: simulated agents (connected, heartbeating), else boot scripts (registered only).
    let sim: Promise<unknown> | undefined;
    let simStop: (() => void) | undefined;
    if (hasHub) {
      const durationMs = 10 * 60_000;
      sim = runSimAgents({
        dispatcher: url,
        enrollToken: readFileSync(join(dataDir, 'enroll.token'), 'utf8').trim(),
        dispatcherKey: parseDispatcherPublicKey(readFileSync(join(dataDir, 'identity.pub'), 'utf8')),
        agents: NODES,
        slots: 1,
        idle: true,
        macPrefix: '52:54:fd',
        durationMs,
        log: () => {},
      });
      simStop = () => {};
      await waitFor(
        `${NODES} connected agents`,
        async () => {
          const s = (await (await fetch(`${url}/api/v1/status`)).json()) as { nodes: { connected: number } };
          return s.nodes.connected >= NODES;
        },
        120_000,
      );
    } else {
      process.stderr.write('operator bench: no agent hub in this dispatcher; registering nodes through boot scripts\n');
      for (let i = 0; i < NODES; i += 50)
        await Promise.all(
          Array.from({ length: Math.min(50, NODES - i) }, (_, j) =>
            fetch(
              `${url}/boot.ipxe?mac=52:54:fd:00:${((i + j) >> 8).toString(16).padStart(2, '0')}:${((i + j) & 255).toString(16).padStart(2, '0')}`,
            ).then((r) => r.text()),
          ),
        );
    }

    // ---- GET /api/v1/nodes
    const lat: number[] = [];
    let bytes = 0;
    for (let i = 0; i < REQUESTS + 10; i++) {
      const t0 = performance.now();
      const r = await fetch(`${url}/api/v1/nodes`);
      const body = await r.text();
      const ms = performance.now() - t0;
      if (i >= 10) lat.push(ms);
      bytes = body.length;
      if (i === 0 && (JSON.parse(body) as { nodes: unknown[] }).nodes.length < NODES) throw new Error('not all nodes are listed');
    }
    const a = stats(lat);
    console.log(
      `RESULT name=api_nodes nodes=${NODES} connected=${hasHub ? NODES : 0} requests=${a.n} median_ms=${a.median} p90_ms=${a.p90} p99_ms=${a.p99} bytes=${bytes}`,
    );

    // ---- live feed: PATCH → update event
    const names = ((await (await fetch(`${url}/api/v1/nodes`)).json()) as { nodes: { name: string }[] }).nodes.map((n) => n.name);
    const ac = new AbortController();
    const res = await fetch(`${url}/api/v1/stream`, { signal: ac.signal });
    const parser = new SseParser();
    const waiting = new Map<string, (t: number) => void>();
    let snapshot = false;
    void (async () => {
      const reader = res.body!.getReader();
      const dec = new TextDecoder();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          for (const m of parser.push(dec.decode(value, { stream: true }))) {
            if (m.event === 'snapshot') snapshot = true;
            if (m.event !== 'update') continue;
            const u = JSON.parse(m.data) as { nodes: { name: string; labels: string[] }[] };
            for (const n of u.nodes) {
              const k = `${n.name}:${n.labels.join(',')}`;
              waiting.get(k)?.(performance.now());
            }
          }
        }
      } catch {
        /* aborted */
      }
    })();
    await waitFor('the feed snapshot', () => snapshot);
    const feed: number[] = [];
    for (let i = 0; i < FEED_CHANGES; i++) {
      const name = names[(i * 37) % names.length]!;
      const label = `bench${i}`;
      const got = new Promise<number>((resolve) => waiting.set(`${name}:${label}`, resolve));
      const t0 = performance.now();
      const r = await fetch(`${url}/api/v1/nodes/${name}`, {
        method: 'PATCH',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({ labels: [label] }),
      });
      if (!r.ok) throw new Error(`PATCH ${name}: ${r.status} ${await r.text()}`);
      feed.push((await got) - t0);
      await new Promise((r2) => setTimeout(r2, 137)); // not in step with the flush timer
    }
    ac.abort();
    const f = stats(feed);
    console.log(`RESULT name=live_feed nodes=${NODES} changes=${f.n} median_ms=${f.median} p90_ms=${f.p90} max_ms=${f.max}`);

    // ---- control latency with real agents on simulated machines
    if (!hasHub) {
      console.log('RESULT name=control_ack skipped=no-agent-hub');
      return;
    }
    if (process.getuid?.() !== 0) {
      console.log('RESULT name=control_ack skipped=needs-root');
      return;
    }
    const machines = Array.from(
      { length: MACHINES },
      (_, i) =>
        new SimulatedMachine({
          dispatcherUrl: url,
          mac: `52:54:00:be:00:${(i + 1).toString(16).padStart(2, '0')}`,
          pubKeyFile: join(dataDir, 'identity.pub'),
          agentBin: join(ROOT, 'dist/bin/node-agent.mjs'),
          slots: 1,
        }),
    );
    try {
      for (const m of machines) m.powerOn();
      const nodeOf = new Map<string, string>();
      const connectedAt = async (mac: string) => {
        const n = (await (await fetch(`${url}/api/v1/nodes/${mac}`)).json()) as {
          name: string;
          connected: boolean;
          lastHeartbeat: number | null;
          state: string;
        };
        nodeOf.set(mac, n.name);
        return n;
      };
      await Promise.all(machines.map((m) => waitFor(`${m.mac} up`, async () => (await connectedAt(m.mac)).state === 'ready', 60_000)));
      const acks: number[] = [];
      const https: number[] = [];
      const backs: number[] = [];
      const inFlight = new Set<Promise<void>>();
      for (let i = 0; i < REBOOTS; i++) {
        const m = machines[i % machines.length]!;
        // The previous reboot of this machine must be over.
        await waitFor(`${m.mac} ready`, async () => (await connectedAt(m.mac)).state === 'ready', 60_000);
        const name = nodeOf.get(m.mac)!;
        const bootsBefore = m.boots;
        const t0 = performance.now();
        const r = await fetch(`${url}/api/v1/nodes/${name}/reboot`, { method: 'POST', headers: auth });
        const http = performance.now() - t0;
        const body = (await r.json()) as { ackMs: number; error?: unknown };
        if (!r.ok) throw new Error(`reboot ${name}: ${JSON.stringify(body)}`);
        acks.push(body.ackMs);
        https.push(http);
        const p = waitFor(`${name} back`, async () => m.boots > bootsBefore && (await connectedAt(m.mac)).state === 'ready', 60_000).then(
          () => {
            backs.push(performance.now() - t0);
          },
        );
        inFlight.add(p);
        void p.finally(() => inFlight.delete(p));
      }
      await Promise.all(inFlight);
      const ack = stats(acks);
      const h = stats(https);
      const b = stats(backs);
      console.log(`RESULT name=control_ack command=reboot samples=${ack.n} median_ms=${ack.median} p90_ms=${ack.p90} max_ms=${ack.max}`);
      console.log(`RESULT name=control_http command=reboot samples=${h.n} median_ms=${h.median} p90_ms=${h.p90} max_ms=${h.max}`);
      console.log(`RESULT name=reboot_back samples=${b.n} median_ms=${Math.round(b.median)} max_ms=${Math.round(b.max)}`);
    } finally {
      await Promise.all(machines.map((m) => m.stop()));
      for (const m of machines) m.cleanup();
    }
    simStop?.();
    void sim;
  } catch (err) {
    process.stderr.write(`operator bench: ${(err as Error).stack}\n${stderr.slice(-2000)}\n`);
    process.exitCode = 1;
  } finally {
    stop();
  }
  process.exit(process.exitCode ?? 0);
}

await main();
