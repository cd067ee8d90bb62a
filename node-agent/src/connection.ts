/**
 * The real TaskSource: the agent's WebSocket to the dispatcher. Connects (User-Agent
 * `lilcluster-node-agent/<version>`), says hello, checks the welcome's signature against the
 * dispatcher's public key (protocol/session.ts), then passes messages to the agent until the
 * connection drops — and connects again, with exponential back-off and jitter so a restarted
 * dispatcher is not hit by every node in the same millisecond.
 *
 * An agent that cannot verify the dispatcher (wrong key, or no key outside --insecure) says
 * so on its console, tells the dispatcher, and does not go on: no task, no command.
 * The dispatcher is declared gone after `missedHeartbeats` intervals without a message.
 *
 * Given several dispatchers (a leader and its standbys), it talks to one at a time and, when that
 * one fails or is a standby, tries the others in turn (dispatchers.ts decides which).
 *
 * The configured token (a boot token admits one hello) is used once; each welcome derives
 * the session credential for the next hello of this boot (protocol/session.ts), kept in
 * memory and in `credentialFile` so a restarted agent can reconnect too. A refused
 * credential is dropped and the configured token tried again.
 */
import { networkInterfaces } from 'node:os';
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import type { KeyObject } from 'node:crypto';
import { createHash } from 'node:crypto';
import WebSocket from 'ws';
import type { Channel } from '../../dispatcher/src/protocol/channel.js';
import { ProtocolError } from '../../dispatcher/src/protocol/codec.js';
import {
  AGENT_USER_AGENT_PREFIX,
  PROTOCOL_VERSION,
  type AgentMessage,
  type BootedImage,
  type NodeResources,
  type Inventory as InventoryInfo,
  type WelcomeMessage,
} from '../../dispatcher/src/protocol/messages.js';
import {
  deriveSessionKeys,
  newEphemeralKey,
  newNonce,
  raw32,
  transcript,
  verifyTranscript,
  type EphemeralKey,
} from '../../dispatcher/src/protocol/session.js';
import type { SourceHandlers, TaskSource } from './seams.js';
import { agentInboundChannel, type AgentInbound } from './task-batch.js';
import { describeRefusal, DispatcherRotation, httpBaseOf, MAX_REFUSAL_BODY_BYTES, retryAfterMs } from './dispatchers.js';

/** In the work dir: the session credential for the next hello of this boot. */
export const SESSION_CREDENTIAL_FILE = 'session.credential';
export const BACKOFF_INITIAL_MS = 250;
export const BACKOFF_MAX_MS = 5000;
/** After a refusal that needs a human (bad token, denied) or an unverifiable dispatcher. */
export const BACKOFF_REFUSED_MS = 30_000;
/** Largest message the agent accepts (task batches are bounded well below by the dispatcher). */
const MAX_INCOMING_BYTES = 64 * 1024 * 1024;

export interface ConnectionOptions {
  /** ws://host:port/api/v1/agent, or every dispatcher's (a leader and its standbys), tried in turn. */
  url: string | readonly string[];
  auth: { kind: 'boot' | 'enroll'; token: string };
  /** Where the session credential is kept across agent restarts (0600); none: memory only. */
  credentialFile?: string;
  /** The node's MAC, when given (--mac, lc.mac=, BOOTIF=); else the NIC that reaches the dispatcher. */
  mac: string | null;
  /** The dispatcher's Ed25519 public key; null when none is configured. */
  dispatcherKey: KeyObject | null;
  insecure: boolean;
  slots: number;
  agentVersion: string;
  /** The image this boot came from (booted-image.ts); absent on hosts the dispatcher did not boot. */
  image?: BootedImage;
  /** What the agent hands out to tasks (told in the hello). */
  resources?: NodeResources;
  inventory: () => Promise<InventoryInfo>;
  say: (line: string) => void;
}

interface Pending {
  nonce: Buffer;
  eph: EphemeralKey;
  mac: string;
}

export class DispatcherConnection implements TaskSource {
  readonly #o: ConnectionOptions;
  #handlers: SourceHandlers | undefined;
  #ws: WebSocket | undefined;
  #channel: Channel<AgentInbound, AgentMessage> = agentInboundChannel(MAX_INCOMING_BYTES);
  #state: 'idle' | 'connecting' | 'hello-sent' | 'open' | 'stopped' = 'idle';
  #pending: Pending | undefined;
  #attempt = 0;
  #nextDelayMs: number | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #watchdog: NodeJS.Timeout | undefined;
  #lastMessageAt = 0;
  #lastError = '';
  /** What an HTTP answer to the upgrade said (a standby's 503), for this attempt. */
  #refusal: { why: string; leader?: string; retryAfterMs?: number } | undefined;
  /** The dispatcher answered the hello (a refusal): it leads, the next attempt stays with it. */
  #answered = false;
  readonly #rotation: DispatcherRotation;
  #quietFailures = 0;
  #corked = false;
  /** Set once a welcome has been verified on the current connection. */
  #session: { heartbeatMs: number; missed: number } | undefined;
  /** The reconnect credential from the last welcome, and the MAC it is for. */
  #credential: { mac: string; token: string } | undefined;
  /** What the pending hello presented. */
  #presented: 'session' | 'configured' = 'configured';

  constructor(opts: ConnectionOptions) {
    this.#o = opts;
    this.#rotation = new DispatcherRotation(typeof opts.url === 'string' ? [opts.url] : opts.url);
    this.#credential = readCredential(opts.credentialFile);
  }

  /** The agent WebSocket URL of the dispatcher in use (or being tried). */
  get url(): string {
    return this.#rotation.current;
  }

  /** `http://host:port` of that dispatcher: where task inputs come from. */
  get httpBase(): string {
    return httpBaseOf(this.#rotation.current);
  }

  get isConnected(): boolean {
    return this.#state === 'open';
  }

  start(handlers: SourceHandlers): void {
    this.#handlers = handlers;
    this.#connect();
  }

  send(msg: AgentMessage): boolean {
    if (this.#state !== 'open' || this.#ws?.readyState !== WebSocket.OPEN) return false;
    if (!this.#corked) {
      // Messages of one tick (results, progress, a heartbeat) leave in one write.
      const sock = (this.#ws as unknown as { _socket?: { cork?: () => void; uncork?: () => void } })._socket;
      if (sock?.cork && sock.uncork) {
        sock.cork();
        this.#corked = true;
        process.nextTick(() => {
          this.#corked = false;
          sock.uncork!();
        });
      }
    }
    this.#ws.send(this.#channel.encode(msg));
    return true;
  }

  async stop(): Promise<void> {
    const wasOpen = this.#state === 'open';
    this.#state = 'stopped';
    clearTimeout(this.#retryTimer);
    clearInterval(this.#watchdog);
    const ws = this.#ws;
    if (!ws || ws.readyState === WebSocket.CLOSED) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        ws.terminate();
        resolve();
      }, 1000);
      ws.once('close', () => {
        clearTimeout(t);
        resolve();
      });
      ws.close(1000, 'agent stopping');
    });
    if (wasOpen) this.#handlers?.disconnected('agent stopping');
  }

  #connect(): void {
    if (this.#state === 'stopped') return;
    this.#state = 'connecting';
    this.#channel = agentInboundChannel(MAX_INCOMING_BYTES);
    this.#session = undefined;
    this.#refusal = undefined;
    this.#answered = false;
    const ws = new WebSocket(this.#rotation.current, {
      headers: { 'user-agent': `${AGENT_USER_AGENT_PREFIX}${this.#o.agentVersion}` },
      perMessageDeflate: false,
      maxPayload: MAX_INCOMING_BYTES + 1024 * 1024,
      handshakeTimeout: 10_000,
    });
    this.#ws = ws;
    let localAddress: string | undefined;
    ws.on('upgrade', (res) => {
      localAddress = res.socket.localAddress;
    });
    ws.on('open', () => {
      void this.#sendHello(ws, localAddress).catch((err: Error) => {
        this.#o.say(`cannot say hello: ${err.message}`);
        ws.terminate();
      });
    });
    // An HTTP answer instead of the upgrade: read why (a standby names the leader), then give up this attempt.
    ws.on('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      const done = () => {
        if (this.#refusal) return;
        const r = describeRefusal(res.statusCode ?? 0, Buffer.concat(chunks).toString('utf8'));
        const retry = r.standby ? retryAfterMs(res.headers['retry-after'], BACKOFF_INITIAL_MS, BACKOFF_MAX_MS) : undefined;
        this.#refusal = {
          why: r.why,
          ...(r.standby && r.leader ? { leader: r.leader } : {}),
          ...(retry !== undefined ? { retryAfterMs: retry } : {}),
        };
        ws.terminate();
      };
      res.on('data', (d: Buffer) => {
        if (size >= MAX_REFUSAL_BODY_BYTES) return;
        chunks.push(d.subarray(0, MAX_REFUSAL_BODY_BYTES - size));
        size += d.length;
        if (size >= MAX_REFUSAL_BODY_BYTES) done();
      });
      res.once('end', done);
      res.once('error', done);
      res.once('close', done);
    });
    ws.on('message', (data, isBinary) => this.#onMessage(ws, data as Buffer, isBinary));
    ws.on('error', (err) => {
      this.#lastError = err.message;
    });
    ws.on('close', (code, reason) => this.#onClose(ws, code, reason.toString()));
  }

  async #sendHello(ws: WebSocket, localAddress: string | undefined): Promise<void> {
    const inventory = await this.#o.inventory();
    if (ws !== this.#ws || ws.readyState !== WebSocket.OPEN) return;
    const mac = this.#o.mac ?? macOfAddress(localAddress) ?? firstNicMac(inventory);
    if (!mac) throw new Error("cannot tell this node's MAC: pass --mac");
    const nonce = newNonce();
    const eph = newEphemeralKey();
    this.#pending = { nonce, eph, mac };
    const { running, undelivered } = this.#handlers!.helloState();
    const cred = this.#credential?.mac === mac ? this.#credential : undefined;
    this.#presented = cred ? 'session' : 'configured';
    ws.send(
      this.#channel.encode({
        type: 'hello',
        protocol: PROTOCOL_VERSION,
        agentVersion: this.#o.agentVersion,
        mac,
        auth: cred ? { kind: 'session', token: cred.token } : this.#o.auth,
        nonce: nonce.toString('base64'),
        ephemeralKey: eph.publicRaw.toString('base64'),
        slots: this.#o.slots,
        inventory,
        running,
        undelivered,
        ...(this.#o.image ? { image: this.#o.image } : {}),
        ...(this.#o.resources ? { resources: this.#o.resources } : {}),
      }),
    );
    this.#state = 'hello-sent';
    this.#lastMessageAt = Date.now();
  }

  #onMessage(ws: WebSocket, data: Buffer, isBinary: boolean): void {
    if (ws !== this.#ws) return;
    this.#lastMessageAt = Date.now();
    const msg = this.#channel.decode(data, isBinary);
    if (msg instanceof ProtocolError) {
      this.#o.say(`dispatcher message rejected: ${msg.code}: ${msg.message}`);
      this.#sendRaw(ws, {
        type: 'error',
        code: msg.code,
        message: msg.message,
        ...(msg.field !== undefined ? { field: msg.field } : {}),
        ...(msg.about ? { about: msg.about } : {}),
      });
      return;
    }
    if (this.#state === 'hello-sent') {
      switch (msg.type) {
        case 'welcome':
          return this.#onWelcome(ws, msg);
        case 'refused':
          this.#answered = true;
          this.#o.say(`refused by the dispatcher (${msg.reason}): ${msg.message}`);
          this.#nextDelayMs = msg.retryAfterMs ?? (msg.reason === 'malformed' ? BACKOFF_MAX_MS : BACKOFF_REFUSED_MS);
          if (msg.reason === 'bad-token' && this.#presented === 'session') {
            // The credential ended (a new boot of this MAC, a forgotten node): try the configured token at once.
            this.#setCredential(undefined);
            this.#nextDelayMs = BACKOFF_INITIAL_MS;
          }
          ws.close(1000, 'refused');
          return;
        case 'error':
          this.#o.say(`dispatcher error during the handshake: ${msg.code}: ${msg.message}`);
          return;
        default:
          this.#sendRaw(ws, { type: 'error', code: 'out-of-order', message: `${msg.type} before welcome`, about: msg.type });
          return;
      }
    }
    if (this.#state !== 'open') return;
    if (msg.type === 'tasks-partial') {
      // The valid assignments still run; the dispatcher hears why the others were refused.
      this.#o.say(`dispatcher task batch partly refused: ${msg.problem}`);
      this.#sendRaw(ws, { type: 'error', code: 'malformed', message: msg.problem.slice(0, 4096), about: 'tasks' });
    }
    this.#handlers!.message(msg);
  }

  #onWelcome(ws: WebSocket, w: WelcomeMessage): void {
    const p = this.#pending!;
    const theirs = raw32(w.ephemeralKey);
    if (!theirs) return this.#untrusted(ws, 'the welcome carries a malformed key');
    let verified = false;
    if (this.#o.dispatcherKey) {
      if (!verifyTranscript(this.#o.dispatcherKey, transcript(p.nonce, p.eph.publicRaw, theirs, p.mac), w.signature))
        return this.#untrusted(
          ws,
          `its signature does not verify with the configured dispatcher key (${keyFingerprint(this.#o.dispatcherKey)})`,
        );
      verified = true;
    } else if (!this.#o.insecure) {
      return this.#untrusted(
        ws,
        'no dispatcher key is configured (give --dispatcher-key FILE, LC_PUBKEY_FILE or /etc/lilcluster/dispatcher.pub; or run with --insecure)',
      );
    }
    const keys = deriveSessionKeys(p.eph.privateKey, theirs, p.nonce);
    this.#channel.establish(keys);
    // Kept before the first sealed message leaves: that message tells the dispatcher the older credential is spent.
    this.#setCredential({ mac: p.mac, token: keys.reconnect });
    this.#pending = undefined;
    this.#state = 'open';
    this.#attempt = 0;
    this.#quietFailures = 0;
    this.#rotation.connected();
    if (this.#rotation.urls.length > 1) this.#o.say(`talking to dispatcher ${this.#rotation.current}`);
    this.#session = { heartbeatMs: w.heartbeatMs, missed: w.missedHeartbeats };
    clearInterval(this.#watchdog);
    this.#watchdog = setInterval(
      () => {
        const silent = Date.now() - this.#lastMessageAt;
        if (this.#session && silent > this.#session.missed * this.#session.heartbeatMs) {
          this.#o.say(`the dispatcher has been silent for ${silent} ms; reconnecting`);
          ws.terminate();
        }
      },
      Math.max(50, Math.floor(w.heartbeatMs / 4)),
    );
    this.#handlers!.connected({
      nodeName: w.nodeName,
      heartbeatMs: w.heartbeatMs,
      missedHeartbeats: w.missedHeartbeats,
      maxMessageBytes: w.maxMessageBytes,
      verified,
      ...(w.healthCheck ? { healthCheck: w.healthCheck } : {}),
    });
  }

  #setCredential(c: { mac: string; token: string } | undefined): void {
    this.#credential = c;
    const file = this.#o.credentialFile;
    if (!file) return;
    try {
      if (!c) return rmSync(file, { force: true });
      const tmp = `${file}.tmp-${process.pid}`;
      writeFileSync(tmp, JSON.stringify(c) + '\n', { mode: 0o600 });
      renameSync(tmp, file);
    } catch (err) {
      this.#o.say(`cannot keep the session credential in ${file}: ${(err as Error).message} (a restarted agent will need a new boot)`);
    }
  }

  /** The dispatcher could not be verified: say it loudly, tell it, run nothing, try again later. */
  #untrusted(ws: WebSocket, why: string): void {
    this.#o.say(`REFUSING the dispatcher at ${this.#rotation.current}: ${why}. Not running its tasks or commands.`);
    this.#sendRaw(ws, { type: 'error', code: 'untrusted', message: `agent refuses this dispatcher: ${why}` });
    this.#nextDelayMs = BACKOFF_REFUSED_MS;
    ws.close(1000, 'untrusted dispatcher');
  }

  /** Sends outside the session (during the handshake: plain; after: sealed). */
  #sendRaw(ws: WebSocket, msg: AgentMessage): void {
    if (ws.readyState === WebSocket.OPEN) ws.send(this.#channel.encode(msg));
  }

  #onClose(ws: WebSocket, code: number, reason: string): void {
    if (ws !== this.#ws) return;
    clearInterval(this.#watchdog);
    const wasOpen = this.#state === 'open';
    if (this.#state === 'stopped') return;
    this.#state = 'idle';
    this.#session = undefined;
    if (wasOpen) this.#handlers!.disconnected(`connection closed (${code}${reason ? ` ${reason}` : ''})`);
    const tried = this.#rotation.current;
    const refusal = this.#refusal;
    // A dispatcher that answered the hello leads (it refused us for a reason of its own): stay with it.
    const next = wasOpen
      ? this.#rotation.lost()
      : this.#answered
        ? undefined
        : this.#rotation.failed(refusal?.leader, refusal?.retryAfterMs);
    const backoff = () => Math.min(backoffMs(this.#attempt++), next?.capMs ?? Number.POSITIVE_INFINITY);
    const delay = this.#nextDelayMs ?? (!next || next.backoff ? backoff() : 0);
    this.#nextDelayMs = undefined;
    if (!wasOpen && !this.#answered) {
      // Unreachable dispatcher or a standby: one line at first, then one every tenth attempt.
      const why = refusal?.why ?? this.#lastError;
      const then = next && next.url !== tried ? `; trying ${next.url}${next.followed ? ' (the leader it names)' : ''}` : '; retrying';
      if (this.#quietFailures++ % 10 === 0 && why)
        this.#o.say(`dispatcher ${tried} ${refusal ? 'takes no agents' : 'unreachable'} (${why})${then}`);
    }
    this.#lastError = '';
    this.#retryTimer = setTimeout(() => this.#connect(), delay);
  }
}

/** The credential a previous run of this agent kept, if the file holds one. */
function readCredential(file: string | undefined): { mac: string; token: string } | undefined {
  if (!file) return undefined;
  try {
    const c = JSON.parse(readFileSync(file, 'utf8')) as { mac?: unknown; token?: unknown };
    return typeof c.mac === 'string' && typeof c.token === 'string' && c.token.length <= 256 ? { mac: c.mac, token: c.token } : undefined;
  } catch {
    return undefined;
  }
}

/** Exponential back-off with "equal jitter": half fixed, half random. */
export function backoffMs(attempt: number, random = Math.random): number {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_INITIAL_MS * 2 ** Math.min(attempt, 20));
  return Math.round(base / 2 + random() * (base / 2));
}

/** The MAC of the interface holding a local address (the NIC that reaches the dispatcher). */
export function macOfAddress(address: string | undefined, ifaces = networkInterfaces()): string | undefined {
  if (!address) return undefined;
  const a = address.replace(/^::ffff:/, '');
  for (const list of Object.values(ifaces)) {
    for (const i of list ?? []) if (i.address === a && !i.internal && i.mac && i.mac !== '00:00:00:00:00:00') return i.mac.toLowerCase();
  }
  return undefined;
}

function firstNicMac(inv: InventoryInfo): string | undefined {
  return inv.nics.find((n) => /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(n.mac) && n.mac !== '00:00:00:00:00:00')?.mac.toLowerCase();
}

function keyFingerprint(key: KeyObject): string {
  const der = key.export({ type: 'spki', format: 'der' });
  return `sha256 ${createHash('sha256')
    .update(der.subarray(der.length - 32))
    .digest('hex')
    .slice(0, 16)}…`;
}
