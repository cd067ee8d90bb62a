/**
 * The web page's live feed (GET /api/v1/stream, server-sent events). A new client gets a
 * `snapshot` (summary, every node, recent events); then `update` events carry only what
 * changed, coalesced: at most one update every FLUSH_MS for all clients together, so a
 * 1,000-node cluster whose agents heartbeat every few seconds does not flood the page.
 *
 * Changes are found by comparing each node's view with the one last sent. A change of state,
 * tasks or anything else an operator acts on goes out at the next flush; a change of live
 * figures only (load, memory, uptime, heartbeat time) at most every FIGURES_EVERY_MS per
 * node. Events go out as they come (up to MAX_EVENTS_PER_FLUSH per flush); the summary every
 * SUMMARY_EVERY_MS. A client that cannot keep up is cut off; its EventSource reconnects and
 * gets a fresh snapshot.
 */
import type { ClusterEvent, NodeView, StatusView } from '../schemas.js';
import type { SseSink } from '../streams.js';

export const FLUSH_MS = 500;
export const FIGURES_EVERY_MS = 10_000;
export const SUMMARY_EVERY_MS = 2_000;
export const MAX_EVENTS_PER_FLUSH = 200;
export const SNAPSHOT_EVENTS = 100;
/** Bytes queued to one client before it is dropped. */
export const MAX_CLIENT_BACKLOG = 4 * 1024 * 1024;

export interface FeedSources {
  nodes(): NodeView[];
  summary(): StatusView;
  recentEvents(n: number): ClusterEvent[];
  subscribeEvents(fn: (e: ClusterEvent) => void): () => void;
  now(): number;
}

export interface FeedClient {
  sink: SseSink;
  /** Bytes waiting in the client's socket buffer. */
  backlog(): number;
}

export interface FeedUpdate {
  nodes: NodeView[];
  removed: string[];
  events: ClusterEvent[];
  status?: StatusView;
}

interface Sent {
  key: string;
  full: string;
  at: number;
}

export class LiveFeed {
  readonly #clients = new Set<FeedClient>();
  readonly #sent = new Map<string, Sent>();
  #events: ClusterEvent[] = [];
  #unsubscribe: (() => void) | undefined;
  #timer: NodeJS.Timeout | undefined;
  #lastSummary = 0;
  /** Updates sent (for tests and the bench). */
  flushes = 0;

  constructor(
    private readonly src: FeedSources,
    private readonly flushMs = FLUSH_MS,
  ) {}

  get clients(): number {
    return this.#clients.size;
  }

  add(client: FeedClient): void {
    if (this.#clients.size === 0) this.#start();
    this.#clients.add(client);
    client.sink.onClose(() => this.#remove(client));
    client.sink.send('snapshot', { status: this.src.summary(), nodes: this.src.nodes(), events: this.src.recentEvents(SNAPSHOT_EVENTS) });
  }

  stop(): void {
    for (const c of this.#clients) c.sink.close();
    this.#clients.clear();
    this.#halt();
  }

  /** Computes and sends one update (the timer calls it every FLUSH_MS; tests call it directly). */
  flush(): FeedUpdate | undefined {
    const update = this.diff();
    if (!update) return undefined;
    this.flushes++;
    for (const c of this.#clients) {
      if (c.backlog() > MAX_CLIENT_BACKLOG) {
        c.sink.close();
        continue;
      }
      c.sink.send('update', update);
    }
    return update;
  }

  /** What changed since the last update (and records it as sent). */
  diff(): FeedUpdate | undefined {
    const now = this.src.now();
    const nodes: NodeView[] = [];
    const seen = new Set<string>();
    for (const v of this.src.nodes()) {
      seen.add(v.mac);
      const full = JSON.stringify(v);
      const prev = this.#sent.get(v.mac);
      if (prev?.full === full) continue;
      const key = JSON.stringify({ ...v, load1: 0, memUsedMiB: 0, uptimeS: 0, lastHeartbeat: 0 });
      if (prev && prev.key === key && now - prev.at < FIGURES_EVERY_MS) continue;
      this.#sent.set(v.mac, { key, full, at: now });
      nodes.push(v);
    }
    const removed: string[] = [];
    for (const mac of this.#sent.keys()) {
      if (!seen.has(mac)) {
        removed.push(mac);
        this.#sent.delete(mac);
      }
    }
    const events = this.#events;
    this.#events = [];
    let status: StatusView | undefined;
    // Node changes move the counts: refresh the summary with them, else every SUMMARY_EVERY_MS.
    if (now - this.#lastSummary >= SUMMARY_EVERY_MS || nodes.length > 0) {
      status = this.src.summary();
      this.#lastSummary = now;
    }
    if (!nodes.length && !removed.length && !events.length && !status) return undefined;
    return { nodes, removed, events, ...(status ? { status } : {}) };
  }

  #start(): void {
    // Clients start from a snapshot: the diff base is "everything as of now".
    this.#sent.clear();
    const now = this.src.now();
    for (const v of this.src.nodes()) {
      this.#sent.set(v.mac, {
        full: JSON.stringify(v),
        key: JSON.stringify({ ...v, load1: 0, memUsedMiB: 0, uptimeS: 0, lastHeartbeat: 0 }),
        at: now,
      });
    }
    this.#lastSummary = now;
    this.#unsubscribe = this.src.subscribeEvents((e) => {
      // Beyond this, the page's event list would scroll faster than anyone reads: drop the rest.
      if (this.#events.length < MAX_EVENTS_PER_FLUSH) this.#events.push(e);
    });
    this.#timer = setInterval(() => this.flush(), this.flushMs);
    this.#timer.unref();
  }

  #remove(client: FeedClient): void {
    this.#clients.delete(client);
    if (this.#clients.size === 0) this.#halt();
  }

  #halt(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
    this.#events = [];
  }
}
