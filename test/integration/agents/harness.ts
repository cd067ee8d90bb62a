/**
 * Test harness for the agent hub: an in-process dispatcher (core + hub + HTTP on a free
 * loopback port) around any DispatchEngine, with its log captured as JSON lines; real agent
 * processes (dist/bin/node-agent.mjs); and a raw protocol client that can send anything.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { tempDir } from '../../unit/agent/temp-dirs.js';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import WebSocket from 'ws';
import { createCore, closeCore, type Core } from '../../../dispatcher/src/core.js';
import { resolveConfig } from '../../../dispatcher/src/config.js';
import { resolveNodeNetwork } from '../../../dispatcher/src/net/interfaces.js';
import { buildApp } from '../../../dispatcher/src/http/app.js';
import type { ClusterFile } from '../../../dispatcher/src/nodes/cluster-file.js';
import type { DispatchEngine } from '../../../dispatcher/src/dispatch/contract.js';
import { AgentHub, type HubOptions } from '../../../dispatcher/src/agents/hub.js';
import { agentHubPlugin } from '../../../dispatcher/src/agents/plugin.js';
import { agentChannel, type Channel } from '../../../dispatcher/src/protocol/channel.js';
import { ProtocolError } from '../../../dispatcher/src/protocol/codec.js';
import { AGENT_PATH, PROTOCOL_VERSION, type AgentMessage, type DispatcherMessage } from '../../../dispatcher/src/protocol/messages.js';
import {
  deriveSessionKeys,
  newEphemeralKey,
  newNonce,
  raw32,
  transcript,
  verifyTranscript,
} from '../../../dispatcher/src/protocol/session.js';
import type { FastifyInstance } from 'fastify';
import { FAKE_INVENTORY } from '../../unit/protocol/fixtures.js';
import { AGENT_BIN } from '../../lab/paths.js';

export interface TestHub {
  core: Core;
  hub: AgentHub;
  app: FastifyInstance;
  port: number;
  url: string;
  wsUrl: string;
  dataDir: string;
  pubKeyFile: string;
  enrollToken: string;
  /** The dispatcher's log, one parsed JSON object per line. */
  lines: Record<string, unknown>[];
  stop(): Promise<void>;
}

export async function startHub(
  engine: DispatchEngine,
  opts: { heartbeatSeconds?: number; hub?: HubOptions; cluster?: ClusterFile; dataDir?: string; port?: number } = {},
): Promise<TestHub> {
  const dataDir = opts.dataDir ?? tempDir('lc-agents-');
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  const log = pino({ level: 'debug' }, sink);
  const config = resolveConfig({
    dhcp: { mode: 'off' },
    dataDir,
    httpPort: 0,
    httpHost: '127.0.0.1',
    tftp: false,
    heartbeatSeconds: opts.heartbeatSeconds ?? 1,
  });
  const core = createCore({
    config,
    log,
    network: resolveNodeNetwork(undefined, '127.0.0.1'),
    ...(opts.cluster ? { cluster: opts.cluster } : {}),
  });
  const hub = new AgentHub(core, engine, opts.hub);
  const app = await buildApp(core, [agentHubPlugin(hub)]);
  await app.listen({ port: opts.port ?? 0, host: '127.0.0.1' });
  const port = (app.server.address() as { port: number }).port;
  return {
    core,
    hub,
    app,
    port,
    url: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}${AGENT_PATH}`,
    dataDir,
    pubKeyFile: join(dataDir, 'identity.pub'),
    enrollToken: readFileSync(join(dataDir, 'enroll.token'), 'utf8').trim(),
    lines,
    async stop() {
      await app.close();
      closeCore(core);
    },
  };
}

export async function waitFor<T>(what: string, probe: () => T | undefined | false | null, timeoutMs = 20_000, everyMs = 20): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined && v !== false && v !== null) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export interface AgentProcess {
  child: ChildProcess;
  out: string[];
  waitForLine(re: RegExp, timeoutMs?: number): Promise<string>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

export function startAgent(args: string[], env: Record<string, string> = {}): AgentProcess {
  const child = spawn(process.execPath, [AGENT_BIN, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
  });
  const out: string[] = [];
  let buf = '';
  const onData = (d: Buffer) => {
    buf += d.toString();
    const parts = buf.split('\n');
    buf = parts.pop()!;
    out.push(...parts);
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return {
    child,
    out,
    waitForLine: (re, timeoutMs = 20_000) => waitFor(`agent line ${re}`, () => out.find((l) => re.test(l)), timeoutMs),
    async kill(signal = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

/** A real agent enrolled with a dispatcher (enrollment token and identity from its data dir). */
export function agentFor(
  d: { url: string; dataDir: string },
  mac: string,
  extra: string[] = [],
  env: Record<string, string> = {},
): AgentProcess {
  return startAgent(
    [
      '--dispatcher',
      d.url,
      '--enroll-token',
      readFileSync(join(d.dataDir, 'enroll.token'), 'utf8').trim(),
      '--dispatcher-key',
      join(d.dataDir, 'identity.pub'),
      '--mac',
      mac,
      '--work-dir',
      join(d.dataDir, `agent-${mac.replaceAll(':', '')}`),
      ...extra,
    ],
    env,
  );
}

export { FAKE_INVENTORY };

/**
 * A protocol client that can misbehave: sends raw frames or messages, does (or skips) the
 * handshake, and records what the dispatcher sends.
 */
export class RawClient {
  readonly ws: WebSocket;
  readonly channel: Channel<DispatcherMessage, AgentMessage> = agentChannel();
  readonly received: (DispatcherMessage | ProtocolError)[] = [];
  closed: { code: number; reason: string } | undefined;
  readonly opened: Promise<void>;
  lastHandshakeVerified: boolean | undefined;
  /** The session credential the last welcome derived (hello auth `session` on a reconnect). */
  reconnect: string | undefined;
  #pending:
    | {
        nonce: Buffer;
        eph: ReturnType<typeof newEphemeralKey>;
        mac: string;
        key: import('node:crypto').KeyObject | undefined;
        verified?: boolean;
      }
    | undefined;

  constructor(wsUrl: string) {
    this.ws = new WebSocket(wsUrl, { headers: { 'user-agent': 'lilcluster-node-agent/test' }, perMessageDeflate: false });
    this.ws.on('message', (d, isBinary) => {
      const m = this.channel.decode(d as Buffer, isBinary);
      this.received.push(m);
      // Establish at once: sealed messages may follow the welcome in the same read.
      if (!(m instanceof ProtocolError) && m.type === 'welcome' && this.#pending) {
        const p = this.#pending;
        this.#pending = undefined;
        const theirs = raw32(m.ephemeralKey)!;
        p.verified = !p.key || verifyTranscript(p.key, transcript(p.nonce, p.eph.publicRaw, theirs, p.mac), m.signature);
        if (p.verified) {
          const keys = deriveSessionKeys(p.eph.privateKey, theirs, p.nonce);
          this.channel.establish(keys);
          this.reconnect = keys.reconnect;
        }
        this.lastHandshakeVerified = p.verified;
      }
    });
    this.ws.on('close', (code, reason) => (this.closed = { code, reason: reason.toString() }));
    this.ws.on('error', () => {});
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', () => resolve());
      this.ws.once('error', reject);
    });
  }

  send(msg: AgentMessage): void {
    this.ws.send(this.channel.encode(msg));
  }

  sendRaw(data: Buffer | string, binary = true): void {
    this.ws.send(data, { binary });
  }

  messages<T extends DispatcherMessage['type']>(type: T): Extract<DispatcherMessage, { type: T }>[] {
    return this.received.filter((m): m is Extract<DispatcherMessage, { type: T }> => !(m instanceof ProtocolError) && m.type === type);
  }

  waitFor<T extends DispatcherMessage['type']>(type: T, count = 1, timeoutMs = 10_000): Promise<Extract<DispatcherMessage, { type: T }>[]> {
    return waitFor(
      `${count} ${type} message(s)`,
      () => {
        const m = this.messages(type);
        return m.length >= count ? m : undefined;
      },
      timeoutMs,
      5,
    );
  }

  /** Says hello and completes the handshake, checking the dispatcher's signature when a key is given. */
  async handshake(
    mac: string,
    auth: { kind: 'boot' | 'session' | 'enroll'; token: string },
    opts: {
      slots?: number;
      running?: { taskId: number; attempt: number }[];
      undelivered?: { taskId: number; attempt: number }[];
      key?: import('node:crypto').KeyObject;
    } = {},
  ): Promise<Extract<DispatcherMessage, { type: 'welcome' | 'refused' }>> {
    await this.opened;
    const nonce = newNonce();
    const eph = newEphemeralKey();
    const before = this.received.length;
    this.#pending = { nonce, eph, mac, key: opts.key };
    this.send({
      type: 'hello',
      protocol: PROTOCOL_VERSION,
      agentVersion: 'test',
      mac,
      auth,
      nonce: nonce.toString('base64'),
      ephemeralKey: eph.publicRaw.toString('base64'),
      slots: opts.slots ?? 2,
      inventory: FAKE_INVENTORY,
      running: (opts.running ?? []).map((r) => ({ ...r, startedAt: Date.now(), progress: null })),
      undelivered: opts.undelivered ?? [],
    });
    const reply = await waitFor('welcome or refused', () =>
      this.received
        .slice(before)
        .find(
          (m): m is Extract<DispatcherMessage, { type: 'welcome' | 'refused' }> =>
            !(m instanceof ProtocolError) && (m.type === 'welcome' || m.type === 'refused'),
        ),
    );
    if (reply.type === 'welcome' && this.lastHandshakeVerified === false) throw new Error('welcome signature does not verify');
    return reply;
  }

  close(): void {
    this.ws.close();
  }
}
