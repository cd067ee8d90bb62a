/**
 * Simulated agents: many protocol clients in one process, speaking the real protocol (the
 * same codec, handshake and sealed frames as node-agent), for load on the dispatcher.
 *
 *   node dist/bench/sim-agents.mjs --dispatcher http://127.0.0.1:8080 --data-dir DIR \
 *        [--agents 100] [--slots 32] [--tasks N | --duration S] [--idle] [--mac-prefix 52:54:fe]
 *
 * Work mode (default): each agent asks for `slots` tasks and answers every task at once with
 * an exit-0 result (no process spawned), batched per message, then asks again: the
 * dispatcher's own cost per task. Ends after --tasks acknowledged results or --duration.
 * Idle mode (--idle): agents only connect and send heartbeats (memory/CPU with many nodes).
 *
 * Prints `RESULT name=sim-agents ... tasks_per_s=...` (the bench scripts' format). Exports
 * `runSimAgents` for benches that drive it in-process.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { KeyObject } from 'node:crypto';
import WebSocket from 'ws';
import { agentChannel, type Channel } from '../dispatcher/src/protocol/channel.js';
import { ProtocolError } from '../dispatcher/src/protocol/codec.js';
import {
  AGENT_PATH,
  AGENT_USER_AGENT_PREFIX,
  PROTOCOL_VERSION,
  type AgentMessage,
  type DispatcherMessage,
  type Inventory,
  type WireTaskResult,
} from '../dispatcher/src/protocol/messages.js';
import {
  deriveSessionKeys,
  newEphemeralKey,
  newNonce,
  parseDispatcherPublicKey,
  raw32,
  transcript,
  verifyTranscript,
} from '../dispatcher/src/protocol/session.js';

export interface SimOptions {
  /** http://host:port of the dispatcher. */
  dispatcher: string;
  enrollToken: string;
  /** Verify the dispatcher's signature with this key (as a real agent does); null skips the check. */
  dispatcherKey: KeyObject | null;
  agents: number;
  slots: number;
  /** Stop after this many acknowledged results (work mode). */
  tasks?: number;
  /** Stop after this long, ms. */
  durationMs?: number;
  idle: boolean;
  /** First three bytes of the agents' MACs (vary it to run several sim processes at once). */
  macPrefix: string;
  /** Connections opened at once while ramping up. */
  connectConcurrency?: number;
  log?: (line: string) => void;
}

export interface SimReport {
  agents: number;
  connected: number;
  refused: number;
  tasks: number;
  acked: number;
  seconds: number;
  tasksPerS: number;
  /** Time from receiving a task to the acknowledgement of its result, ms. */
  ackP50Ms: number;
  ackP99Ms: number;
  messagesIn: number;
  messagesOut: number;
}

const INVENTORY: Inventory = {
  hostname: 'sim',
  cpu: { model: 'simulated', cores: 32, physicalCores: 32, speedGHz: null },
  memoryMiB: 65536,
  nics: [],
  disks: [],
  system: { manufacturer: 'lilcluster', model: 'sim-agent', uuid: '', serial: '' },
  os: { kernel: 'sim', distro: 'sim', arch: 'x64' },
  ramRoot: false,
};

class Stats {
  tasks = 0;
  acked = 0;
  connected = 0;
  refused = 0;
  messagesIn = 0;
  messagesOut = 0;
  /** Reservoir of ack latencies (ms). */
  readonly latencies: number[] = [];
  #seen = 0;
  addLatency(ms: number): void {
    this.#seen++;
    if (this.latencies.length < 100_000) this.latencies.push(ms);
    else {
      const i = Math.floor(Math.random() * this.#seen);
      if (i < this.latencies.length) this.latencies[i] = ms;
    }
  }
}

class SimAgent {
  readonly #ws: WebSocket;
  readonly #channel: Channel<DispatcherMessage, AgentMessage> = agentChannel();
  #open = false;
  #heartbeat: NodeJS.Timeout | undefined;
  #pendingResults: WireTaskResult[] = [];
  #flushScheduled = false;
  /** When each task (taskId:attempt) arrived, until its ack. */
  readonly #arrived = new Map<string, number>();
  readonly ready: Promise<boolean>;

  constructor(
    url: string,
    mac: string,
    private readonly o: SimOptions,
    private readonly stats: Stats,
  ) {
    this.#ws = new WebSocket(url, { headers: { 'user-agent': `${AGENT_USER_AGENT_PREFIX}sim` }, perMessageDeflate: false });
    const nonce = newNonce();
    const eph = newEphemeralKey();
    this.ready = new Promise<boolean>((resolve) => {
      this.#ws.on('open', () => {
        this.#send({
          type: 'hello',
          protocol: PROTOCOL_VERSION,
          agentVersion: 'sim',
          mac,
          auth: { kind: 'enroll', token: o.enrollToken },
          nonce: nonce.toString('base64'),
          ephemeralKey: eph.publicRaw.toString('base64'),
          slots: o.slots,
          inventory: INVENTORY,
          running: [],
          undelivered: [],
        });
      });
      this.#ws.on('message', (data, isBinary) => {
        stats.messagesIn++;
        const msg = this.#channel.decode(data as Buffer, isBinary);
        if (msg instanceof ProtocolError) return o.log?.(`${mac}: rejected a dispatcher message: ${msg.message}`);
        if (!this.#open) {
          if (msg.type === 'refused') {
            stats.refused++;
            o.log?.(`${mac}: refused (${msg.reason}): ${msg.message}`);
            resolve(false);
            return this.#ws.close();
          }
          if (msg.type !== 'welcome') return;
          const theirs = raw32(msg.ephemeralKey)!;
          if (o.dispatcherKey && !verifyTranscript(o.dispatcherKey, transcript(nonce, eph.publicRaw, theirs, mac), msg.signature)) {
            o.log?.(`${mac}: welcome signature does not verify`);
            resolve(false);
            return this.#ws.close();
          }
          this.#channel.establish(deriveSessionKeys(eph.privateKey, theirs, nonce));
          this.#open = true;
          stats.connected++;
          const hb = msg.heartbeatMs;
          setTimeout(() => {
            this.#beat();
            this.#heartbeat = setInterval(() => this.#beat(), hb);
          }, Math.random() * hb);
          resolve(true);
          return;
        }
        this.#onMessage(msg);
      });
      this.#ws.on('error', (err) => {
        o.log?.(`${mac}: ${err.message}`);
        resolve(false);
      });
      this.#ws.on('close', () => {
        if (this.#open) stats.connected--;
        this.#open = false;
        clearInterval(this.#heartbeat);
        resolve(false);
      });
    });
  }

  start(): void {
    if (!this.o.idle) this.#send({ type: 'ready', n: this.o.slots });
  }

  close(): void {
    clearInterval(this.#heartbeat);
    this.#ws.close();
  }

  #beat(): void {
    this.#send({ type: 'heartbeat', ts: Date.now(), load1: 0, memUsedMiB: 1024, memTotalMiB: 65536, uptimeS: 1, running: [] });
  }

  #send(msg: AgentMessage): void {
    if (this.#ws.readyState !== WebSocket.OPEN) return;
    this.stats.messagesOut++;
    this.#ws.send(this.#channel.encode(msg));
  }

  #onMessage(msg: DispatcherMessage): void {
    switch (msg.type) {
      case 'tasks': {
        const now = performance.now();
        for (const t of msg.tasks) {
          this.#arrived.set(`${t.taskId}:${t.attempt}`, now);
          this.#pendingResults.push({
            taskId: t.taskId,
            attempt: t.attempt,
            exitCode: 0,
            signal: null,
            timedOut: false,
            error: null,
            startedAt: Date.now(),
            durationMs: 0,
            maxRssKiB: null,
            stdout: '',
            stderr: '',
            stdoutTruncated: false,
            stderrTruncated: false,
            outputsTarGzB64: null,
          });
        }
        this.stats.tasks += msg.tasks.length;
        if (!this.#flushScheduled) {
          this.#flushScheduled = true;
          setImmediate(() => this.#flush());
        }
        return;
      }
      case 'ack': {
        const now = performance.now();
        for (const r of msg.refs) {
          const k = `${r.taskId}:${r.attempt}`;
          const t = this.#arrived.get(k);
          if (t !== undefined) {
            this.stats.addLatency(now - t);
            this.#arrived.delete(k);
          }
        }
        this.stats.acked += msg.refs.length;
        return;
      }
      case 'control':
        this.#send({ type: 'control-ack', id: msg.id, ok: false, error: 'simulated agent' });
        return;
      default:
        return;
    }
  }

  /** One results message and one ready for everything that arrived in this tick. */
  #flush(): void {
    this.#flushScheduled = false;
    const results = this.#pendingResults;
    this.#pendingResults = [];
    if (!results.length) return;
    this.#send({ type: 'results', results });
    this.#send({ type: 'ready', n: results.length });
  }
}

function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export async function runSimAgents(o: SimOptions): Promise<SimReport> {
  const stats = new Stats();
  const url = new URL(AGENT_PATH, o.dispatcher.replace(/^http/, 'ws')).toString();
  const agents: SimAgent[] = [];
  const conc = o.connectConcurrency ?? 50;
  for (let i = 0; i < o.agents; i += conc) {
    const batch: SimAgent[] = [];
    for (let j = i; j < Math.min(o.agents, i + conc); j++) {
      const mac = `${o.macPrefix}:${((j >> 16) & 255).toString(16).padStart(2, '0')}:${((j >> 8) & 255).toString(16).padStart(2, '0')}:${(j & 255).toString(16).padStart(2, '0')}`;
      batch.push(new SimAgent(url, mac, o, stats));
    }
    await Promise.all(batch.map((a) => a.ready));
    agents.push(...batch);
  }
  o.log?.(`${stats.connected}/${o.agents} agents connected`);
  const t0 = performance.now();
  for (const a of agents) a.start();
  await new Promise<void>((resolve) => {
    const end = o.durationMs !== undefined ? t0 + o.durationMs : Infinity;
    const check = setInterval(() => {
      const now = performance.now();
      if ((o.tasks !== undefined && stats.acked >= o.tasks) || now >= end || (stats.connected === 0 && !o.idle)) {
        clearInterval(check);
        resolve();
      }
    }, 5);
  });
  const seconds = (performance.now() - t0) / 1000;
  for (const a of agents) a.close();
  const sorted = [...stats.latencies].sort((a, b) => a - b);
  return {
    agents: o.agents,
    connected: stats.connected,
    refused: stats.refused,
    tasks: stats.tasks,
    acked: stats.acked,
    seconds: Math.round(seconds * 1000) / 1000,
    tasksPerS: Math.round(stats.acked / seconds),
    ackP50Ms: Math.round(percentile(sorted, 50) * 100) / 100,
    ackP99Ms: Math.round(percentile(sorted, 99) * 100) / 100,
    messagesIn: stats.messagesIn,
    messagesOut: stats.messagesOut,
  };
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const dataDir = arg('data-dir');
  const dispatcher = arg('dispatcher') ?? 'http://127.0.0.1:8080';
  const enrollToken = arg('enroll-token') ?? (dataDir ? readFileSync(join(dataDir, 'enroll.token'), 'utf8').trim() : undefined);
  if (!enrollToken) throw new Error("give --enroll-token or --data-dir (the dispatcher's, for enroll.token and identity.pub)");
  const keyFile = arg('dispatcher-key') ?? (dataDir ? join(dataDir, 'identity.pub') : undefined);
  const idle = process.argv.includes('--idle');
  const o: SimOptions = {
    dispatcher,
    enrollToken,
    dispatcherKey: keyFile ? parseDispatcherPublicKey(readFileSync(keyFile, 'utf8')) : null,
    agents: Number(arg('agents') ?? 100),
    slots: Number(arg('slots') ?? 32),
    idle,
    macPrefix: arg('mac-prefix') ?? '52:54:fe',
    ...(arg('tasks') ? { tasks: Number(arg('tasks')) } : {}),
    ...(arg('duration') ? { durationMs: Number(arg('duration')) * 1000 } : {}),
    log: (() => {
      let n = 0;
      return (l: string) => {
        if (++n <= 5 || /agents connected/.test(l)) process.stderr.write(`sim-agents: ${l}\n`);
        else if (n === 6) process.stderr.write('sim-agents: (more messages suppressed)\n');
      };
    })(),
  };
  if (o.tasks === undefined && o.durationMs === undefined) o.durationMs = idle ? 30_000 : 10_000;
  const r = await runSimAgents(o);
  process.stdout.write(
    `RESULT name=sim-agents mode=${idle ? 'idle' : 'work'} agents=${r.agents} slots=${o.slots} connected_end=${r.connected} tasks=${r.acked} seconds=${r.seconds} ` +
      `tasks_per_s=${r.tasksPerS} ack_p50_ms=${r.ackP50Ms} ack_p99_ms=${r.ackP99Ms} messages_in=${r.messagesIn} messages_out=${r.messagesOut}\n`,
  );
  process.exit(0);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err: unknown) => {
    process.stderr.write(`sim-agents: ${(err as Error).message}\n`);
    process.exit(1);
  });
}
