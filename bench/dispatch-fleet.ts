/**
 * A small fleet of simulated agents for the dispatch benchmarks that need to watch single
 * tasks (bench/dispatch-real.ts): when each task arrived, when each result was acknowledged,
 * an agent that freezes (stops answering and heartbeating with its socket left open), agents
 * that reconnect at once after a dispatcher restart. They speak the real protocol (the same
 * codec, signed handshake and sealed frames as node-agent); bench/sim-agents.ts is the bulk
 * load generator, this is the instrumented one.
 */
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
  type TaskAssignment,
  type TaskRef,
  type WireTaskResult,
} from '../dispatcher/src/protocol/messages.js';
import { deriveSessionKeys, newEphemeralKey, newNonce, raw32, transcript, verifyTranscript } from '../dispatcher/src/protocol/session.js';

export interface FleetAgentOptions {
  /** http://host:port of the dispatcher. */
  dispatcher: string;
  mac: string;
  enrollToken: string;
  /** The dispatcher's identity.pub: the welcome's signature is checked as a real agent does. */
  dispatcherKey: KeyObject;
  slots: number;
  /** Answer every task at once with an exit-0 result (false: hold tasks, never answer). */
  answer: boolean;
  /** After a close, connect again this many ms later (undefined: stay closed). */
  reconnectMs?: number;
  onWelcome?: (at: number) => void;
  onTasks?: (tasks: TaskAssignment[], at: number) => void;
  onAck?: (refs: TaskRef[], at: number) => void;
  onClose?: (at: number) => void;
}

const INVENTORY: Inventory = {
  hostname: 'fleet',
  cpu: { model: 'simulated', cores: 32, physicalCores: 32, speedGHz: null },
  memoryMiB: 65536,
  nics: [],
  disks: [],
  system: { manufacturer: 'lilcluster', model: 'bench-fleet', uuid: '', serial: '' },
  os: { kernel: 'sim', distro: 'sim', arch: 'x64' },
  ramRoot: false,
};

export function fleetMac(prefix: string, i: number): string {
  return `${prefix}:${((i >> 16) & 255).toString(16).padStart(2, '0')}:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;
}

export class FleetAgent {
  #ws: WebSocket | undefined;
  #channel: Channel<DispatcherMessage, AgentMessage> = agentChannel();
  #open = false;
  #stopped = false;
  #frozen = false;
  #heartbeat: NodeJS.Timeout | undefined;
  #pending: WireTaskResult[] = [];
  #flushScheduled = false;
  /** When this agent last sent a message (performance.now(), ms; every time given to a callback is on that clock). */
  lastSentAt = 0;
  heartbeatMs = 0;
  readonly held: TaskAssignment[] = [];

  constructor(readonly o: FleetAgentOptions) {}

  get open(): boolean {
    return this.#open;
  }

  /** Connects (and reconnects, with `reconnectMs`); resolves at the first welcome or failure. */
  start(): Promise<boolean> {
    return new Promise((resolve) => this.#connect(resolve));
  }

  /** Stops answering and heartbeating; the socket stays open, as with a hung machine. */
  freeze(): void {
    this.#frozen = true;
    clearInterval(this.#heartbeat);
  }

  close(): void {
    this.#stopped = true;
    clearInterval(this.#heartbeat);
    this.#ws?.terminate();
  }

  #connect(settled?: (ok: boolean) => void): void {
    if (this.#stopped) return settled?.(false);
    const o = this.o;
    const url = new URL(AGENT_PATH, o.dispatcher.replace(/^http/, 'ws')).toString();
    const ws = new WebSocket(url, { headers: { 'user-agent': `${AGENT_USER_AGENT_PREFIX}bench-fleet` }, perMessageDeflate: false });
    this.#ws = ws;
    this.#channel = agentChannel();
    const nonce = newNonce();
    const eph = newEphemeralKey();
    let done = false;
    const settle = (ok: boolean) => {
      if (!done) settled?.(ok);
      done = true;
    };
    ws.on('open', () => {
      this.#send({
        type: 'hello',
        protocol: PROTOCOL_VERSION,
        agentVersion: 'bench-fleet',
        mac: o.mac,
        auth: { kind: 'enroll', token: o.enrollToken },
        nonce: nonce.toString('base64'),
        ephemeralKey: eph.publicRaw.toString('base64'),
        slots: o.slots,
        inventory: INVENTORY,
        running: [],
        undelivered: [],
      });
    });
    ws.on('message', (data, isBinary) => {
      if (this.#frozen) return;
      const msg = this.#channel.decode(data as Buffer, isBinary);
      if (msg instanceof ProtocolError) throw new Error(`${o.mac}: the dispatcher sent a message we reject: ${msg.message}`);
      if (!this.#open) {
        if (msg.type === 'refused') throw new Error(`${o.mac}: refused (${msg.reason}): ${msg.message}`);
        if (msg.type !== 'welcome') return;
        const theirs = raw32(msg.ephemeralKey)!;
        if (!verifyTranscript(o.dispatcherKey, transcript(nonce, eph.publicRaw, theirs, o.mac), msg.signature))
          throw new Error(`${o.mac}: the welcome's signature does not verify`);
        this.#channel.establish(deriveSessionKeys(eph.privateKey, theirs, nonce));
        this.#open = true;
        this.heartbeatMs = msg.heartbeatMs;
        this.#heartbeat = setInterval(() => this.#beat(), msg.heartbeatMs);
        o.onWelcome?.(performance.now());
        this.#send({ type: 'ready', n: o.slots });
        return settle(true);
      }
      this.#onMessage(msg);
    });
    ws.on('error', () => {}); // a close follows
    ws.on('close', () => {
      const wasOpen = this.#open;
      this.#open = false;
      clearInterval(this.#heartbeat);
      if (wasOpen) o.onClose?.(performance.now());
      if (this.#stopped || this.#frozen || o.reconnectMs === undefined) return settle(false);
      setTimeout(() => this.#connect(settle), o.reconnectMs);
    });
  }

  #beat(): void {
    this.#send({ type: 'heartbeat', ts: Date.now(), load1: 0, memUsedMiB: 1024, memTotalMiB: 65536, uptimeS: 1, running: [] });
  }

  #send(msg: AgentMessage): void {
    if (this.#frozen || !this.#ws || this.#ws.readyState !== WebSocket.OPEN) return;
    this.lastSentAt = performance.now();
    this.#ws.send(this.#channel.encode(msg));
  }

  #onMessage(msg: DispatcherMessage): void {
    switch (msg.type) {
      case 'tasks': {
        this.o.onTasks?.(msg.tasks, performance.now());
        if (!this.o.answer) {
          this.held.push(...msg.tasks);
          return;
        }
        for (const t of msg.tasks) {
          this.#pending.push({
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
        if (!this.#flushScheduled) {
          this.#flushScheduled = true;
          setImmediate(() => this.#flush());
        }
        return;
      }
      case 'ack':
        this.o.onAck?.(msg.refs, performance.now());
        return;
      case 'control':
        this.#send({ type: 'control-ack', id: msg.id, ok: false, error: 'simulated agent' });
        return;
      default:
        return;
    }
  }

  /** Everything that arrived in this tick: one results message that also asks for as many more. */
  #flush(): void {
    this.#flushScheduled = false;
    const results = this.#pending;
    this.#pending = [];
    if (results.length) this.#send({ type: 'results', results, ready: results.length });
  }
}
