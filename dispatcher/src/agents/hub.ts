/**
 * The agent hub: every node agent's WebSocket, from hello to close. It admits agents (tokens,
 * enrollment policy), runs the signed handshake, feeds agents tasks from the dispatch engine
 * as they ask for them, returns their results to the engine and acknowledges them once
 * durable, watches heartbeats, and carries operator commands (NodeControl).
 *
 * Flow control is credit-based: `ready {n}` adds n to a connection's credit; each task handed
 * out spends one. An agent that allocates resources (its hello's `resources`) also sends what
 * it has free (`ready {free}`), added to a resource credit each hand-out spends its request
 * from. An agent with credit and no task available waits in `#waiting` and is fed
 * when the engine signals new tasks. Nothing here touches the task list itself.
 *
 * Liveness: any message counts as a sign of life. A node is lost after `missedHeartbeats`
 * heartbeat intervals of silence, or at once when its connection closes; either way
 * `engine.nodeLost` runs immediately. One sweep timer serves all connections (1,000 agents
 * are 1,000 comparisons, not 1,000 timers), and a sweep that fires late (the event loop was
 * blocked, so agents' messages may be waiting unread) judges nobody.
 */
import type { IncomingMessage } from 'node:http';
import type { WebSocket, RawData } from 'ws';
import type { Core } from '../core.js';
import type { Logger } from '../log.js';
import { RateLimitedLog } from '../log.js';
import { DispatcherError } from '../errors.js';
import { VERSION } from '../version.js';
import { tokensEqual } from '../trust/secrets.js';
import type { EnrollCheck } from '../trust/enroll-tokens.js';
import { parseMac, type Mac } from '../nodes/mac.js';
import type { NodeRecord } from '../nodes/registry.js';
import type { NodeState } from '../api/schemas.js';
import type { DispatchEngine, NodeCapacity, RunningTaskRef } from '../dispatch/contract.js';
import type { TaskAssignment, TaskResult } from '../protocol/messages.js';
import type { AgentLiveStatus, ControlCommand, ControlOutcome, NodeControl } from './control-contract.js';
import { dispatcherChannel, type Channel } from '../protocol/channel.js';
import { DEFAULT_MAX_MESSAGE_BYTES, ProtocolError } from '../protocol/codec.js';
import {
  MAX_BATCH,
  PROTOCOL_VERSION,
  type AgentMessage,
  type DispatcherMessage,
  type HelloMessage,
  type Resources,
  type WireTaskResult,
} from '../protocol/messages.js';
import { deriveSessionKeys, newEphemeralKey, raw32, signTranscript, transcript } from '../protocol/session.js';
import { fromWireResults, needsUnpacking, type ResultLimits } from '../protocol/results.js';
import { capacityOf, decideAdmission } from './admission.js';
import type { HealthCheckSpec } from '../nodes/cluster-file.js';
import type { HealthCheck } from '../protocol/messages.js';
import { CommandTracker } from './commands.js';

/** An agent must say hello this soon after connecting. */
export const DEFAULT_HELLO_TIMEOUT_MS = 15_000;
/** How long a command waits for the agent's acknowledgement (exec: its timeout plus this). */
export const DEFAULT_CONTROL_TIMEOUT_MS = 15_000;
/** exec commands without a timeout of their own. */
export const DEFAULT_EXEC_TIMEOUT_MS = 60_000;
/** A connection is closed after this many rejected messages (garbage floods cost CPU). */
export const MAX_PROTOCOL_ERRORS = 100;
/** A node with no task for this long goes from busy back to ready (not one state event per task under load). */
export const IDLE_AFTER_MS = 1000;

/** WebSocket close codes the hub uses (4000-4999: application codes, RFC 6455 §7.4.2). */
export const CLOSE_CODES = { goingAway: 1001, replaced: 4000, lost: 4001, protocol: 4002, refused: 4003, helloTimeout: 4004 } as const;

export interface HubOptions {
  heartbeatMs?: number;
  missedHeartbeats?: number;
  /** Largest message accepted from an agent (a polite `oversize` error above it). */
  maxMessageBytes?: number;
  helloTimeoutMs?: number;
  controlTimeoutMs?: number;
}

export interface HubStats {
  connected: number;
  waiting: number;
  tasksSent: number;
  resultsReceived: number;
  acksSent: number;
  messagesIn: number;
  messagesOut: number;
  protocolErrors: number;
  lostNodes: number;
  refused: number;
  /** Results of tasks the sender did not hold, dropped unread. */
  staleResults: number;
  /** Result parts (texts, outputs tars) cut or refused at their caps. */
  refusedResultParts: number;
}

interface Conn {
  id: number;
  ws: WebSocket;
  ip: string;
  userAgent: string;
  channel: Channel<AgentMessage, DispatcherMessage>;
  state: 'handshake' | 'open' | 'closed';
  openedAt: number;
  lastSeen: number;
  lastHeartbeatSent: number;
  log: Logger;
  mac?: Mac;
  node?: NodeRecord;
  capacity?: NodeCapacity;
  credit: number;
  /** Resources the agent said it has free and no task was handed out against yet; absent: an agent that counts slots only. */
  free?: Resources;
  /** Tasks handed to this node and not yet answered: `taskId:attempt`. */
  held: Set<string>;
  /** Results taken from `held` and not yet durable (a copy sent again meanwhile is not stale). */
  inflight: Set<string>;
  /** Unpacking of this connection's results, one message at a time (bounds its memory). */
  unpacking: Promise<unknown>;
  lastBusyAt: number;
  live?: AgentLiveStatus;
  errors: number;
  /** Operator commands in flight (and whether an acknowledged reboot/poweroff is under way). */
  commands: CommandTracker;
  /** The socket is corked until the end of this tick (#send). */
  corked: boolean;
  /** Why the hub ended the connection itself (its close event then changes nothing). */
  endedBy?: 'replaced' | 'lost' | 'stopping' | 'refused';
  /** The welcome granted a session credential the agent has not yet proved it derived (first sealed message). */
  sessionUnconfirmed?: boolean;
}

const refKey = (taskId: number, attempt: number): string => `${taskId}:${attempt}`;

export class AgentHub implements NodeControl {
  readonly #core: Core;
  readonly #engine: DispatchEngine;
  readonly #log: Logger;
  readonly #rlog: RateLimitedLog;
  readonly #heartbeatMs: number;
  readonly #lostAfterMs: number;
  readonly #sweepMs: number;
  readonly maxMessageBytes: number;
  readonly #helloTimeoutMs: number;
  readonly #controlTimeoutMs: number;
  readonly #conns = new Set<Conn>();
  readonly #byMac = new Map<Mac, Conn>();
  readonly #waiting = new Set<Conn>();
  readonly #draining = new Set<Mac>();
  readonly #unsubscribe: (() => void)[] = [];
  #sweepTimer: NodeJS.Timeout | undefined;
  #lastSweep: number;
  #feedScheduled = false;
  #nextConnId = 1;
  #nextControlId = 1;
  #stopping = false;
  readonly #startedAt = Date.now();
  readonly stats: HubStats = {
    connected: 0,
    waiting: 0,
    tasksSent: 0,
    resultsReceived: 0,
    acksSent: 0,
    messagesIn: 0,
    messagesOut: 0,
    protocolErrors: 0,
    lostNodes: 0,
    refused: 0,
    staleResults: 0,
    refusedResultParts: 0,
  };

  constructor(core: Core, engine: DispatchEngine, opts: HubOptions = {}) {
    this.#core = core;
    this.#engine = engine;
    this.#log = core.log.child({ svc: 'agents' });
    this.#rlog = new RateLimitedLog(this.#log);
    this.#heartbeatMs = opts.heartbeatMs ?? core.config.heartbeatSeconds * 1000;
    const missed = opts.missedHeartbeats ?? core.config.missedHeartbeats;
    // Sweep ten times per interval and judge two sweeps early: a sweep lands up to one sweep
    // after the deadline, and the lost node's tasks still have to reach another agent, so
    // they are handed out again within `missed` intervals of the node's last message.
    this.#sweepMs = Math.max(20, Math.floor(this.#heartbeatMs / 10));
    this.#lostAfterMs = missed * this.#heartbeatMs - 2 * this.#sweepMs;
    this.maxMessageBytes = opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    this.#helloTimeoutMs = opts.helloTimeoutMs ?? DEFAULT_HELLO_TIMEOUT_MS;
    this.#controlTimeoutMs = opts.controlTimeoutMs ?? DEFAULT_CONTROL_TIMEOUT_MS;
    // Gauges read live (the metrics scrape reads them at any time).
    Object.defineProperty(this.stats, 'connected', { get: () => this.#byMac.size, enumerable: true });
    Object.defineProperty(this.stats, 'waiting', { get: () => this.#waiting.size, enumerable: true });
    this.#unsubscribe.push(engine.onTasksAvailable(() => this.#scheduleFeed()));
    this.#unsubscribe.push(engine.onCancel((mac, ref, reason) => this.#cancelOnNode(mac, ref, reason)));
    this.#lastSweep = Date.now();
    this.#sweepTimer = setInterval(() => this.#sweep(), this.#sweepMs);
    this.#sweepTimer.unref();
  }

  // ------------------------------------------------------------------ connections

  /** A WebSocket upgraded on the agent path. */
  accept(ws: WebSocket, req: IncomingMessage): void {
    const now = Date.now();
    const ip = (req.socket.remoteAddress ?? '').replace(/^::ffff:/, '');
    const conn: Conn = {
      id: this.#nextConnId++,
      ws,
      ip,
      userAgent: String(req.headers['user-agent'] ?? ''),
      channel: dispatcherChannel(this.maxMessageBytes),
      state: 'handshake',
      openedAt: now,
      lastSeen: now,
      lastHeartbeatSent: now,
      log: this.#log.child({ ip }),
      credit: 0,
      held: new Set(),
      inflight: new Set(),
      unpacking: Promise.resolve(),
      lastBusyAt: 0,
      errors: 0,
      corked: false,
      commands: undefined as unknown as CommandTracker,
    };
    conn.commands = new CommandTracker(() => conn.node?.name ?? conn.mac ?? ip);
    this.#conns.add(conn);
    conn.log.debug({ ua: conn.userAgent }, 'agent connected');
    ws.on('message', (data: RawData, isBinary: boolean) => this.#onMessage(conn, data, isBinary));
    ws.on('close', (code: number, reason: Buffer) => this.#onClose(conn, code, reason.toString()));
    ws.on('error', (err: Error & { code?: string }) =>
      this.#rlog.warn(`${ip}|ws|${err.code ?? ''}`, { ip, mac: conn.mac, err: err.message, code: err.code }, 'agent connection error'),
    );
    if (this.#stopping) this.#refuse(conn, 'stopping', 'the dispatcher is stopping', 2000);
  }

  #onMessage(conn: Conn, data: RawData, isBinary: boolean): void {
    if (conn.state === 'closed') return;
    this.stats.messagesIn++;
    conn.lastSeen = Date.now();
    const msg = conn.channel.decode(data, isBinary);
    if (msg instanceof ProtocolError) return this.#reject(conn, msg);
    try {
      this.#handle(conn, msg);
    } catch (err) {
      // A bug in a handler must cost one message, not the dispatcher.
      this.#log.error({ err, mac: conn.mac, type: msg.type }, 'agent message handler failed');
      this.#send(conn, { type: 'error', code: 'internal', message: 'the dispatcher failed to handle this message', about: msg.type });
    }
  }

  #handle(conn: Conn, msg: AgentMessage): void {
    if (conn.state === 'handshake' && msg.type !== 'hello' && msg.type !== 'error')
      return this.#reject(
        conn,
        new ProtocolError('out-of-order', `${msg.type} before hello: the first message must be hello`, undefined, msg.type),
      );
    if (conn.sessionUnconfirmed && conn.state === 'open') {
      // A sealed message: the agent holds this session's keys, so it derived the new credential.
      conn.sessionUnconfirmed = false;
      this.#core.bootTokens.confirmSession(conn.mac!);
    }
    switch (msg.type) {
      case 'hello':
        if (conn.state !== 'handshake')
          return this.#reject(conn, new ProtocolError('out-of-order', 'second hello on one connection', undefined, 'hello'));
        return this.#onHello(conn, msg);
      case 'heartbeat':
        return this.#onHeartbeat(conn, msg);
      case 'ready':
        conn.credit += msg.n;
        if (msg.free) addFree(conn, msg.free);
        return this.#feed(conn);
      case 'progress':
        for (const it of msg.items) {
          const ref = { taskId: it.taskId, attempt: it.attempt };
          this.#engine.progress(conn.mac!, ref, it.fraction);
          const r = conn.live?.running.find((x) => x.taskId === it.taskId && x.attempt === it.attempt);
          if (r) r.progress = it.fraction;
        }
        return;
      case 'results':
        this.stats.resultsReceived += msg.results.length;
        void this.#onResults(conn, msg.results);
        if (msg.free) addFree(conn, msg.free);
        if (msg.ready) {
          conn.credit += msg.ready;
          this.#feed(conn);
        }
        return;
      case 'control-ack':
      case 'control-output':
      case 'control-done':
        return conn.commands.onReply(msg);
      case 'health':
        return this.#core.nodeHealth.report(conn.mac!, msg);
      case 'error':
        this.#rlog.warn(
          `${conn.ip}|peer-error|${msg.code}`,
          { ip: conn.ip, mac: conn.mac, code: msg.code, about: msg.about, field: msg.field, peerMessage: msg.message },
          'agent reported an error',
        );
        return;
      default:
        return assertNever(msg);
    }
  }

  #onHello(conn: Conn, hello: HelloMessage): void {
    const mac = parseMac(hello.mac)!;
    const nonce = raw32(hello.nonce);
    const agentKey = raw32(hello.ephemeralKey);
    if (!nonce || !agentKey) return this.#refuse(conn, 'malformed', 'nonce and ephemeralKey must be 32 bytes each');
    const { bootTokens, enrollTokens, nodes } = this.#core;
    const decision = decideAdmission(hello, mac, {
      bootToken: (m, t) => bootTokens.check(m, t),
      session: (m, t) => bootTokens.checkSession(m, t),
      enrollToken: (m, t): EnrollCheck =>
        tokensEqual(t, this.#core.secrets.enrollToken) ? { ok: true, id: 'enroll.token' } : enrollTokens.check(m, t),
      enrollBlocked: (m) =>
        this.isConnected(m)
          ? 'its node is connected'
          : nodes.pxeBooted(m)
            ? "it booted by PXE (its agent proves itself with the boot script's token)"
            : undefined,
      admit: (m, o) => nodes.admit(m, o),
    });
    if (decision.kind === 'refused') {
      this.#rlog.warn(
        `${conn.ip}|refused|${decision.reason}`,
        { ip: conn.ip, mac, reason: decision.reason, auth: hello.auth.kind, why: decision.message },
        'agent refused',
      );
      if (decision.reason === 'pending' && hello.auth.kind === 'boot') bootTokens.renew(mac, hello.auth.token);
      return this.#refuse(conn, decision.reason, decision.message, decision.retryAfterMs);
    }
    // A boot token admits one hello: spent now, before anything is sent.
    if (hello.auth.kind === 'boot' && bootTokens.spend(mac, hello.auth.token) !== 'ok') {
      this.#rlog.warn(`${conn.ip}|refused|bad-token`, { ip: conn.ip, mac, reason: 'bad-token', auth: 'boot' }, 'agent refused');
      return this.#refuse(conn, 'bad-token', `boot token for ${mac} was already used by a hello`);
    }
    if (hello.auth.kind === 'enroll') enrollTokens.use(mac, hello.auth.token); // binds a created token to this MAC
    const node = decision.node;
    const prev = this.#byMac.get(mac);
    if (prev && prev !== conn) {
      // The agent reconnected before we noticed its old connection die: the new one takes over, no loss.
      prev.endedBy = 'replaced';
      this.#endConn(prev, CLOSE_CODES.replaced, 'replaced by a newer connection of the same node');
    }

    const eph = newEphemeralKey();
    const signature = signTranscript(this.#core.secrets.identity.privateKey, transcript(nonce, agentKey, eph.publicRaw, mac));
    this.#send(conn, {
      type: 'welcome',
      protocol: PROTOCOL_VERSION,
      dispatcherVersion: VERSION,
      nodeName: node.name,
      ephemeralKey: eph.publicRaw.toString('base64'),
      signature,
      heartbeatMs: this.#heartbeatMs,
      missedHeartbeats: this.#core.config.missedHeartbeats,
      maxMessageBytes: this.maxMessageBytes,
      ...healthCheckOf(this.#core.nodeHealth.checkFor(node)),
    });
    const keys = deriveSessionKeys(eph.privateKey, agentKey, nonce);
    conn.channel.establish(keys);
    // The credential for this agent's next hello of this boot: derived on both sides, never sent.
    bootTokens.grantSession(mac, keys.reconnect);
    conn.sessionUnconfirmed = true;

    const now = Date.now();
    conn.state = 'open';
    conn.mac = mac;
    conn.node = node;
    conn.log = this.#log.child({ mac, node: node.name });
    conn.capacity = capacityOf(node, hello.inventory, hello.image);
    if (hello.resources) {
      const r = hello.resources;
      conn.capacity.alloc = { cores: r.cores, memMiB: r.memMiB, gpus: r.gpus };
      conn.free = { cores: 0, memMiB: 0, gpus: 0 };
    }
    conn.live = {
      connectedAt: now,
      lastHeartbeat: now,
      load1: null,
      memUsedMiB: null,
      memTotalMiB: Math.round(hello.inventory.memoryMiB),
      uptimeS: null,
      slots: hello.slots,
      running: hello.running.map((r) => ({ ...r })),
      ...(hello.resources ? { resources: { ...hello.resources } } : {}),
    };
    this.#byMac.set(mac, conn);

    this.#core.nodes.recordHello(mac, {
      uuid: hello.inventory.system.uuid || null,
      ip: conn.ip || null,
      agentVersion: hello.agentVersion,
      // What the agent hands out is kept with the inventory: submissions are checked against it while the node is off.
      inventory: (hello.resources ? { ...hello.inventory, resources: hello.resources } : hello.inventory) as unknown as Record<
        string,
        unknown
      >,
      bootedImage: hello.image ?? null,
    });
    this.#core.timeline.record(mac, 'agent.hello', {
      agentVersion: hello.agentVersion,
      ...(hello.image ? { image: `${hello.image.name}@${hello.image.version}`, via: hello.image.via, health: hello.image.health } : {}),
      ip: conn.ip,
      auth: hello.auth.kind,
      slots: hello.slots,
      running: hello.running.length,
      undelivered: hello.undelivered.length,
    });

    // Re-adoption (HTCondor's job lease): tasks the agent still runs, and those whose results
    // it still holds, are offered back to the engine; it keeps those it still leases to us.
    const offered: RunningTaskRef[] = [...hello.running.map((r) => ({ taskId: r.taskId, attempt: r.attempt })), ...hello.undelivered];
    if (offered.length) {
      const { keep, cancel } = this.#engine.readopt(conn.capacity, offered);
      for (const r of keep) conn.held.add(refKey(r.taskId, r.attempt));
      const runningKeys = new Set(hello.running.map((r) => refKey(r.taskId, r.attempt)));
      const toCancel = cancel.filter((r) => runningKeys.has(refKey(r.taskId, r.attempt)));
      if (toCancel.length) this.#send(conn, { type: 'cancel', refs: toCancel, reason: 'not leased to this node any more', report: false });
      conn.log.info({ kept: keep.length, cancelled: cancel.length, undelivered: hello.undelivered.length }, 'agent re-adopted');
    }
    if (conn.held.size) conn.lastBusyAt = now;
    this.#setNodeState(conn, this.#draining.has(mac) ? 'draining' : conn.held.size ? 'busy' : 'ready', 'agent connected');
    conn.log.info({ agentVersion: hello.agentVersion, slots: hello.slots, auth: hello.auth.kind, ua: conn.userAgent }, 'agent welcomed');
  }

  #onHeartbeat(conn: Conn, hb: Extract<AgentMessage, { type: 'heartbeat' }>): void {
    const live = conn.live!;
    live.lastHeartbeat = conn.lastSeen;
    live.load1 = hb.load1;
    live.memUsedMiB = hb.memUsedMiB;
    live.memTotalMiB = hb.memTotalMiB;
    live.uptimeS = hb.uptimeS;
    live.running = hb.running.map((r) => ({ ...r }));
    if (hb.allocated) live.allocated = { ...hb.allocated };
    this.#core.nodes.touch(conn.mac!);
  }

  /**
   * Results: only those of tasks this connection holds are looked at (taken out of `held` at
   * once, so a copy sent again is not unpacked twice); any other is dropped before anything
   * in it is inflated, and acknowledged so the agent forgets it — the engine would call it
   * stale. Compressed parts are unpacked within the configured caps (protocol/results.ts), one
   * message per connection at a time.
   */
  async #onResults(conn: Conn, wire: WireTaskResult[]): Promise<void> {
    const mine: WireTaskResult[] = [];
    const stale: RunningTaskRef[] = [];
    for (const w of wire) {
      const key = refKey(w.taskId, w.attempt);
      if (conn.held.delete(key)) {
        conn.inflight.add(key);
        mine.push(w);
      } else if (!conn.inflight.has(key)) stale.push({ taskId: w.taskId, attempt: w.attempt });
    }
    if (conn.live?.running.length) {
      const done = new Set(wire.map((w) => refKey(w.taskId, w.attempt)));
      conn.live.running = conn.live.running.filter((r) => !done.has(refKey(r.taskId, r.attempt)));
    }
    if (stale.length) {
      this.stats.staleResults += stale.length;
      this.#rlog.warn(
        `${conn.ip}|results-stale`,
        { ip: conn.ip, mac: conn.mac, node: conn.node?.name, count: stale.length, first: stale[0] },
        'results of tasks this node does not hold dropped unread',
      );
      this.#ack(conn, stale);
    }
    if (!mine.length) return;

    let results = mine as TaskResult[];
    if (mine.some(needsUnpacking)) {
      const unpacked = conn.unpacking.then(() => fromWireResults(mine, this.#resultLimits()));
      conn.unpacking = unpacked.catch(() => {});
      let u;
      try {
        u = await unpacked;
      } catch (err) {
        this.#log.error({ err, mac: conn.mac }, 'unpacking results failed');
        this.#giveBack(conn, mine);
        this.#send(conn, { type: 'error', code: 'internal', message: `results not unpacked: ${(err as Error).message}`, about: 'results' });
        return;
      }
      results = u.results;
      if (u.refusals.length) {
        this.stats.refusedResultParts += u.refusals.length;
        const first = u.refusals[0]!;
        this.#rlog.warn(
          `${conn.ip}|results-refused`,
          {
            ip: conn.ip,
            mac: conn.mac,
            node: conn.node?.name,
            count: u.refusals.length,
            task: first.taskId,
            attempt: first.attempt,
            field: first.field,
            why: first.why,
          },
          'result parts refused',
        );
        const said = u.refusals
          .slice(0, 20)
          .map((r) => `task ${r.taskId} attempt ${r.attempt} ${r.field}: ${r.why}`)
          .join('; ');
        this.#send(conn, {
          type: 'error',
          code: 'oversize',
          message: `${said}${u.refusals.length > 20 ? `; and ${u.refusals.length - 20} more` : ''}`.slice(0, 4000),
          about: 'results',
        });
      }
      if (u.deferred.length) {
        // Over this message's inflate budget: not acknowledged, so the agent sends them again.
        this.#giveBack(conn, u.deferred);
        this.#rlog.debug(
          `${conn.ip}|results-deferred`,
          { ip: conn.ip, mac: conn.mac, count: u.deferred.length },
          'results past the message inflate budget deferred',
        );
        this.#send(conn, {
          type: 'error',
          code: 'unavailable',
          message: `${u.deferred.length} results inflate past this message's budget (resultsMessageMaxInflatedBytes): send them again`,
          about: 'results',
        });
      }
    }
    if (!results.length) return;
    try {
      // Acknowledge only once the engine says the results are durable: an agent forgets a result on ack.
      await this.#engine.submitResults(conn.capacity!, results);
    } catch (err) {
      this.#giveBack(conn, results);
      this.#rlog.warn(
        'results|store',
        { mac: conn.mac, err: (err as Error).message, count: results.length },
        'results not recorded; the agent will send them again',
      );
      this.#send(conn, {
        type: 'error',
        code: 'unavailable',
        message: `results not recorded: ${(err as Error).message}; send them again later`,
        about: 'results',
      });
      return;
    }
    for (const r of results) conn.inflight.delete(refKey(r.taskId, r.attempt));
    this.#ack(
      conn,
      results.map((r) => ({ taskId: r.taskId, attempt: r.attempt })),
    );
  }

  /** Results not taken after all: their tasks are this connection's again, to be sent again. */
  #giveBack(conn: Conn, refs: RunningTaskRef[]): void {
    for (const r of refs) {
      const key = refKey(r.taskId, r.attempt);
      conn.inflight.delete(key);
      if (conn.state === 'open') conn.held.add(key);
    }
  }

  #ack(conn: Conn, refs: RunningTaskRef[]): void {
    for (let i = 0; i < refs.length; i += MAX_BATCH) {
      if (this.#send(conn, { type: 'ack', refs: refs.slice(i, i + MAX_BATCH) }))
        this.stats.acksSent += Math.min(MAX_BATCH, refs.length - i);
    }
  }

  #resultLimits(): ResultLimits {
    const c = this.#core.config;
    return {
      textBytes: c.resultTextMaxBytes,
      outputsBytes: c.outputsMaxBytes,
      outputsInflatedBytes: c.outputsMaxInflatedBytes,
      messageInflatedBytes: c.resultsMessageMaxInflatedBytes,
    };
  }

  #onClose(conn: Conn, code: number, reason: string): void {
    const wasOpen = conn.state === 'open';
    conn.state = 'closed';
    this.#conns.delete(conn);
    this.#waiting.delete(conn);
    conn.commands.connectionClosed();
    if (!wasOpen || !conn.mac) return;
    if (this.#byMac.get(conn.mac) === conn) this.#byMac.delete(conn.mac);
    if (conn.endedBy === 'replaced' || conn.endedBy === 'lost' || conn.endedBy === 'stopping') return;
    this.#nodeLost(conn, `connection closed (${code}${reason ? ` ${reason}` : ''})`);
  }

  /** The node is gone: its tasks go back to the list now, not at their timeouts. */
  #nodeLost(conn: Conn, why: string): void {
    const mac = conn.mac!;
    this.stats.lostNodes++;
    this.#engine.nodeLost(mac);
    const state: NodeState = conn.commands.fate ?? 'lost';
    this.#core.nodes.setState(mac, state, why);
    conn.log.info({ why, state, held: conn.held.size }, 'agent gone');
    conn.held.clear();
  }

  /** Closes a connection the hub gave up on; its close event then changes nothing more. */
  #endConn(conn: Conn, code: number, reason: string): void {
    this.#waiting.delete(conn);
    if (conn.mac && this.#byMac.get(conn.mac) === conn) this.#byMac.delete(conn.mac);
    try {
      if (code === CLOSE_CODES.lost || code === CLOSE_CODES.helloTimeout) conn.ws.terminate();
      else conn.ws.close(code, reason);
    } catch {
      conn.ws.terminate();
    }
  }

  #refuse(conn: Conn, reason: Extract<DispatcherMessage, { type: 'refused' }>['reason'], message: string, retryAfterMs?: number): void {
    this.stats.refused++;
    this.#send(conn, { type: 'refused', reason, message, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) });
    conn.endedBy = 'refused';
    conn.state = 'closed';
    conn.ws.close(CLOSE_CODES.refused, reason);
  }

  /** A message we cannot take: tell the peer why, log (rate-limited), carry on — up to a limit. */
  #reject(conn: Conn, err: ProtocolError): void {
    this.stats.protocolErrors++;
    conn.errors++;
    this.#rlog.warn(
      `${conn.ip}|${err.code}`,
      { ip: conn.ip, mac: conn.mac, code: err.code, field: err.field, about: err.about, why: err.message },
      'agent message rejected',
    );
    this.#send(conn, {
      type: 'error',
      code: err.code,
      message: err.message,
      ...(err.field !== undefined ? { field: err.field } : {}),
      ...(err.about ? { about: err.about } : {}),
    });
    if (err.about === 'hello' && conn.state === 'handshake')
      return this.#refuse(conn, 'malformed', `hello rejected: ${err.message} (this dispatcher speaks agent protocol ${PROTOCOL_VERSION})`);
    if (conn.errors >= MAX_PROTOCOL_ERRORS) {
      conn.log.warn({ errors: conn.errors }, 'closing an agent connection that keeps sending bad messages');
      conn.ws.close(CLOSE_CODES.protocol, 'too many bad messages');
    }
  }

  #send(conn: Conn, msg: DispatcherMessage): boolean {
    if (conn.ws.readyState !== 1 /* OPEN */) return false;
    const frame = conn.channel.encode(msg);
    if (!conn.corked) {
      // Messages sent to one agent in the same tick (acks, tasks, a cancel) leave in one
      // write: on loopback and LANs the per-write cost, not the bytes, dominates.
      const sock = (conn.ws as unknown as { _socket?: { cork?: () => void; uncork?: () => void } })._socket;
      if (sock?.cork && sock.uncork) {
        sock.cork();
        conn.corked = true;
        process.nextTick(() => {
          conn.corked = false;
          sock.uncork!();
        });
      }
    }
    conn.ws.send(frame);
    this.stats.messagesOut++;
    return true;
  }

  // ------------------------------------------------------------------ feeding

  #scheduleFeed(): void {
    if (this.#feedScheduled) return;
    this.#feedScheduled = true;
    setImmediate(() => {
      this.#feedScheduled = false;
      for (const conn of [...this.#waiting]) this.#feed(conn);
    });
  }

  #feed(conn: Conn): void {
    this.#waiting.delete(conn);
    if (conn.state !== 'open' || conn.credit <= 0 || this.#draining.has(conn.mac!)) return;
    const tasks = this.#engine.takeTasks(conn.capacity!, Math.min(conn.credit, MAX_BATCH), conn.free);
    if (tasks.length) {
      conn.credit -= tasks.length;
      for (const t of tasks) conn.held.add(refKey(t.taskId, t.attempt));
      this.#sendTasks(conn, tasks);
      this.stats.tasksSent += tasks.length;
      conn.lastBusyAt = Date.now();
      if (conn.node!.state !== 'busy') this.#setNodeState(conn, 'busy', 'running tasks');
    }
    if (conn.credit > 0) this.#waiting.add(conn); // re-added at the end: round robin among waiting agents
  }

  /** Sends tasks in messages that fit the agent's limit (big stdin payloads can make a batch large). */
  #sendTasks(conn: Conn, tasks: TaskAssignment[]): void {
    let batch: TaskAssignment[] = [];
    let bytes = 0;
    const budget = Math.floor(conn.channel.maxMessageBytes / 2);
    for (const t of tasks) {
      const size =
        256 +
        (t.stdinB64?.length ?? 0) +
        (typeof t.command === 'string' ? t.command.length : t.command.reduce((n, a) => n + a.length + 4, 0));
      if (batch.length && bytes + size > budget) {
        this.#send(conn, { type: 'tasks', tasks: batch });
        batch = [];
        bytes = 0;
      }
      batch.push(t);
      bytes += size;
    }
    if (batch.length) this.#send(conn, { type: 'tasks', tasks: batch });
  }

  #cancelOnNode(mac: Mac, ref: RunningTaskRef, reason: string): void {
    const conn = this.#byMac.get(mac);
    if (conn?.state !== 'open') return;
    conn.held.delete(refKey(ref.taskId, ref.attempt));
    this.#send(conn, { type: 'cancel', refs: [{ taskId: ref.taskId, attempt: ref.attempt }], reason, report: false });
  }

  #setNodeState(conn: Conn, state: NodeState, reason: string): void {
    const rec = this.#core.nodes.setState(conn.mac!, state, reason);
    if (rec) conn.node = rec;
  }

  // ------------------------------------------------------------------ liveness

  #sweep(): void {
    const now = Date.now();
    const late = now - this.#lastSweep > this.#sweepMs * 3 + 100;
    this.#lastSweep = now;
    if (late) return; // the loop was blocked: messages may be waiting unread; judge at the next sweep
    for (const conn of this.#conns) {
      if (conn.state === 'handshake') {
        if (now - conn.openedAt > this.#helloTimeoutMs) {
          conn.state = 'closed';
          this.#rlog.warn(`${conn.ip}|hello-timeout`, { ip: conn.ip }, 'agent connection closed: no hello in time');
          conn.ws.terminate();
        }
        continue;
      }
      if (conn.state !== 'open') continue;
      if (now - conn.lastSeen > this.#lostAfterMs) {
        conn.endedBy = 'lost';
        this.#nodeLost(conn, `no message for ${now - conn.lastSeen} ms (heartbeat ${this.#heartbeatMs} ms)`);
        this.#endConn(conn, CLOSE_CODES.lost, 'missed heartbeats');
        conn.state = 'closed';
        continue;
      }
      if (now - conn.lastHeartbeatSent >= this.#heartbeatMs) {
        conn.lastHeartbeatSent = now;
        this.#send(conn, { type: 'heartbeat', ts: now });
      }
      if (conn.held.size === 0 && conn.node?.state === 'busy' && now - conn.lastBusyAt > IDLE_AFTER_MS && !this.#draining.has(conn.mac!))
        this.#setNodeState(conn, 'ready', 'idle');
    }
  }

  // ------------------------------------------------------------------ NodeControl

  isConnected(mac: Mac): boolean {
    return this.#byMac.get(mac)?.state === 'open';
  }

  /**
   * Whether a live agent holds this MAC's session: connected (the sweep ends connections that
   * miss heartbeats), or — in the first loss window after the dispatcher started — up before
   * the restart and not yet back. A new boot script must not end such a session.
   */
  holdsSession(mac: Mac): boolean {
    if (this.isConnected(mac)) return true;
    if (Date.now() - this.#startedAt > this.#lostAfterMs) return false;
    const state = this.#core.nodes.byMac(mac)?.state;
    return state === 'ready' || state === 'busy' || state === 'draining';
  }

  connected(): Mac[] {
    return [...this.#byMac.keys()];
  }

  send(
    mac: Mac,
    cmd: ControlCommand,
    opts: { timeoutMs?: number; onOutput?: (stream: 'stdout' | 'stderr', chunk: string) => void } = {},
  ): Promise<ControlOutcome> {
    const conn = this.#byMac.get(mac);
    if (conn?.state !== 'open') return Promise.reject(new DispatcherError('DSP_ERR_NODE_OFFLINE', `the agent of ${mac} is not connected`));
    const id = this.#nextControlId++;
    const timeoutMs =
      opts.timeoutMs ??
      (cmd.kind === 'exec' ? (cmd.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS) + this.#controlTimeoutMs : this.#controlTimeoutMs);
    return conn.commands.start(id, cmd, timeoutMs, opts.onOutput, () => this.#send(conn, { type: 'control', id, command: cmd }));
  }

  setDraining(mac: Mac, draining: boolean): void {
    if (draining) this.#draining.add(mac);
    else this.#draining.delete(mac);
    const conn = this.#byMac.get(mac);
    if (conn?.state !== 'open') return;
    if (draining) {
      this.#waiting.delete(conn);
      this.#setNodeState(conn, 'draining', 'drain requested');
    } else {
      this.#setNodeState(conn, conn.held.size ? 'busy' : 'ready', 'drain ended');
      this.#feed(conn);
    }
  }

  isDraining(mac: Mac): boolean {
    return this.#draining.has(mac);
  }

  liveStatus(mac: Mac): AgentLiveStatus | undefined {
    const live = this.#byMac.get(mac)?.live;
    return live ? { ...live, running: live.running.map((r) => ({ ...r })) } : undefined;
  }

  /**
   * Closes every agent connection (dispatcher shutdown). Nodes are not declared lost and
   * tasks stay leased: agents reconnect to the restarted dispatcher and re-adopt them.
   */
  async stop(): Promise<void> {
    this.#stopping = true;
    if (this.#sweepTimer) clearInterval(this.#sweepTimer);
    this.#sweepTimer = undefined;
    for (const u of this.#unsubscribe.splice(0)) u();
    const closing: Promise<void>[] = [];
    for (const conn of this.#conns) {
      conn.endedBy = 'stopping';
      closing.push(
        new Promise((resolve) => {
          if (conn.ws.readyState === 3) return resolve();
          const t = setTimeout(() => {
            conn.ws.terminate();
            resolve();
          }, 1000);
          conn.ws.once('close', () => {
            clearTimeout(t);
            resolve();
          });
          conn.ws.close(CLOSE_CODES.goingAway, 'dispatcher stopping');
        }),
      );
    }
    await Promise.all(closing);
  }
}

/** Adds an agent's `free` to its resource credit (an agent that sent no resources in its hello counts slots only). */
function addFree(conn: Conn, free: Resources): void {
  const f = conn.free;
  if (!f) return;
  f.cores += free.cores;
  f.memMiB += free.memMiB;
  f.gpus += free.gpus;
}

/** The welcome's health check field, in the protocol's units. */
function healthCheckOf(h: HealthCheckSpec | undefined): { healthCheck?: HealthCheck } {
  if (!h) return {};
  return {
    healthCheck: { command: h.command, intervalMs: Math.round(h.intervalSeconds * 1000), timeoutMs: Math.round(h.timeoutSeconds * 1000) },
  };
}

function assertNever(x: never): never {
  throw new Error(`unhandled message ${(x as { type?: string }).type}`);
}
