/** The page's live feed: what a flush sends, coalescing, and slow clients. */
import { describe, expect, it } from 'vitest';
import {
  LiveFeed,
  FIGURES_EVERY_MS,
  MAX_EVENTS_PER_FLUSH,
  MAX_CLIENT_BACKLOG,
  type FeedSources,
} from '../../../dispatcher/src/api/live/feed.js';
import type { NodeView, StatusView } from '../../../dispatcher/src/api/schemas.js';
import type { ClusterEvent } from '../../../dispatcher/src/api/schemas.js';
import type { SseSink } from '../../../dispatcher/src/api/streams.js';

function view(i: number, over: Partial<NodeView> = {}): NodeView {
  return {
    name: `node${i}`,
    mac: `m${i}`,
    uuid: null,
    state: 'ready',
    stateSince: 0,
    enrollment: 'admitted',
    labels: [],
    ip: null,
    imageVersion: null,
    image: { image: 'default', next: null, stale: false, health: null, healthDetail: null, via: null },
    agentVersion: null,
    bootCount: 1,
    firstSeen: 0,
    lastSeen: 0,
    connected: true,
    draining: false,
    cpu: null,
    cores: 4,
    memoryMiB: 1024,
    load1: 0.1,
    memUsedMiB: 100,
    uptimeS: 10,
    lastHeartbeat: 0,
    slots: 4,
    tasks: [],
    bootStage: null,
    ...over,
  };
}

function setup(n: number) {
  let t = 1_000_000;
  const nodes = new Map<string, NodeView>();
  for (let i = 1; i <= n; i++) nodes.set(`m${i}`, view(i));
  const listeners = new Set<(e: ClusterEvent) => void>();
  let summaries = 0;
  const src: FeedSources = {
    nodes: () => [...nodes.values()],
    summary: () => {
      summaries++;
      return { now: t } as unknown as StatusView;
    },
    recentEvents: () => [],
    subscribeEvents: (fn) => {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
    now: () => t,
  };
  const feed = new LiveFeed(src, 60_000); // the timer never fires in a test: flush() by hand
  const sent: { event: string; data: unknown }[] = [];
  let closed = false;
  let backlog = 0;
  const closers: (() => void)[] = [];
  const sink: SseSink = {
    send: (event, data) => {
      sent.push({ event, data });
      return true;
    },
    get closed() {
      return closed;
    },
    onClose: (fn) => void closers.push(fn),
    close: () => {
      closed = true;
      closers.forEach((f) => f());
    },
  };
  feed.add({ sink, backlog: () => backlog });
  return {
    feed,
    nodes,
    sent,
    emit: (e: Partial<ClusterEvent>) =>
      listeners.forEach((l) => l({ id: 1, ts: t, kind: 'x', node: null, message: 'm', data: null, ...e })),
    advance: (ms: number) => (t += ms),
    setBacklog: (b: number) => (backlog = b),
    closed: () => closed,
    listeners,
    summaries: () => summaries,
  };
}

describe('live feed', () => {
  it('starts a client with a snapshot of every node', () => {
    const { sent } = setup(3);
    expect(sent).toHaveLength(1);
    expect(sent[0]!.event).toBe('snapshot');
    expect((sent[0]!.data as { nodes: NodeView[] }).nodes).toHaveLength(3);
  });

  it('sends nothing when nothing changed', () => {
    const { feed, sent, advance } = setup(3);
    advance(100);
    expect(feed.flush()).toBeUndefined();
    expect(sent).toHaveLength(1);
  });

  it('sends a state change at the next flush, only for the node that changed', () => {
    const { feed, nodes, advance } = setup(1000);
    nodes.set('m500', view(500, { state: 'busy', tasks: [{ taskId: 1, attempt: 1, progress: null, startedAt: 0 }] }));
    advance(500);
    const u = feed.flush()!;
    expect(u.nodes.map((n) => n.name)).toEqual(['node500']);
    expect(u.status).toBeDefined(); // counts moved
  });

  it('holds back changes of live figures only, up to FIGURES_EVERY_MS per node', () => {
    const { feed, nodes, advance } = setup(2);
    advance(FIGURES_EVERY_MS + 1);
    nodes.set('m1', view(1, { load1: 0.9, lastHeartbeat: 5 }));
    expect(feed.flush()!.nodes.map((n) => n.name)).toEqual(['node1']); // last sent long ago: goes now
    nodes.set('m1', view(1, { load1: 1.5, lastHeartbeat: 10 }));
    advance(500);
    expect(feed.flush()?.nodes ?? []).toEqual([]);
    advance(FIGURES_EVERY_MS);
    expect(feed.flush()!.nodes[0]).toMatchObject({ name: 'node1', load1: 1.5 });
  });

  it('reports removed nodes and coalesces events, up to a limit per flush', () => {
    const { feed, nodes, emit, advance } = setup(2);
    nodes.delete('m2');
    for (let i = 0; i < MAX_EVENTS_PER_FLUSH + 50; i++) emit({ id: i });
    advance(500);
    const u = feed.flush()!;
    expect(u.removed).toEqual(['m2']);
    expect(u.events).toHaveLength(MAX_EVENTS_PER_FLUSH);
    advance(500);
    expect(feed.flush()?.events ?? []).toEqual([]);
  });

  it('cuts off a client that does not keep up, and stops listening when the last one leaves', () => {
    const { feed, nodes, setBacklog, closed, advance, listeners } = setup(1);
    setBacklog(MAX_CLIENT_BACKLOG + 1);
    nodes.set('m1', view(1, { state: 'lost' }));
    advance(500);
    feed.flush();
    expect(closed()).toBe(true);
    expect(feed.clients).toBe(0);
    expect(listeners.size).toBe(0);
  });
});
