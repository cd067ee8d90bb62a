/**
 * The dispatcher's core services, shared by every protocol server and API route:
 * configuration, logging, store, events, node registry and secrets. Built without
 * opening any socket, so tests can make one on a temp dir (or `:memory:`).
 */
import type { DispatcherConfig } from './config.js';
import type { Logger } from './log.js';
import { openStore, type Db } from './store/database.js';
import { GroupCommit } from './store/group-commit.js';
import { Checkpointer } from './store/checkpointer.js';
import { allMigrations } from './store/migrations.js';
import { EventLog } from './events/event-log.js';
import { NodeRegistry } from './nodes/registry.js';
import { DEFAULT_BOOT_TOKEN_MINUTES, EMPTY_CLUSTER, loadClusterFile, type ClusterFile } from './nodes/cluster-file.js';
import { BootTokens } from './trust/boot-tokens.js';
import { EnrollTokens } from './trust/enroll-tokens.js';
import { BootAddresses } from './trust/boot-origin.js';
import { loadOrCreateSecrets, type Secrets } from './trust/secrets.js';
import type { NodeNetwork } from './net/interfaces.js';
import { BootTimeline } from './boot/timeline.js';
import { MetricsRegistry } from './metrics/registry.js';
import { ImageCatalog } from './images/catalog.js';
import { ImageReleases } from './images/releases.js';
import { ImageAssignments } from './images/assignment.js';
import { NodeHealthMonitor } from './nodes/node-health.js';
import type { SharedStore } from './store/postgres/shared-store.js';

export interface Core {
  config: DispatcherConfig;
  log: Logger;
  db: Db;
  commits: GroupCommit;
  /** WAL checkpoints on a worker thread (store/checkpointer.ts). */
  checkpointer: Checkpointer;
  events: EventLog;
  nodes: NodeRegistry;
  cluster: ClusterFile;
  secrets: Secrets;
  bootTokens: BootTokens;
  /** Enrollment tokens made with `dispatcherctl enroll-token create`. */
  enrollTokens: EnrollTokens;
  /** Per MAC, the address its DHCP exchange of this boot used (DHCP writes, boot routes read). */
  bootAddresses: BootAddresses;
  timeline: BootTimeline;
  /** Counters and gauges for /metrics: every service registers its own (see metrics/registry.ts). */
  metrics: MetricsRegistry;
  /** The images served (catalog), which version of each nodes boot (releases), and which image each node boots. */
  images: { catalog: ImageCatalog; releases: ImageReleases; assignments: ImageAssignments };
  network: NodeNetwork;
  /** Health-check reports and suspect detection: drains and undrains nodes (nodes/node-health.ts). */
  nodeHealth: NodeHealthMonitor;
  /** The PostgreSQL store when `--store` names one (store/postgres/); unset for the embedded SQLite. */
  shared?: SharedStore;
  now: () => number;
  startedAt: number;
}

export interface CoreOptions {
  config: DispatcherConfig;
  log: Logger;
  network: NodeNetwork;
  /** Overrides the cluster file named in the config (tests). */
  cluster?: ClusterFile;
  /** The PostgreSQL store this dispatcher leads (its state loaded into an in-memory SQLite). */
  shared?: SharedStore;
  now?: () => number;
}

export function createCore(opts: CoreOptions): Core {
  const { config, log } = opts;
  const now = opts.now ?? Date.now;
  const db = opts.shared?.db ?? openStore({ dataDir: config.dataDir, migrations: allMigrations });
  const commits = opts.shared ? new GroupCommit(db, undefined, opts.shared.durability) : new GroupCommit(db);
  const checkpointer = new Checkpointer(db, log);
  const events = new EventLog(db, commits, now);
  const cluster = opts.cluster ?? (config.clusterFile ? loadClusterFile(config.clusterFile) : EMPTY_CLUSTER);
  const nodes = new NodeRegistry(db, commits, events, cluster, now);
  const secrets = loadOrCreateSecrets(config.dataDir === ':memory:' ? tmpSecretsDir() : config.dataDir);
  const bootTokens = new BootTokens(db, now, (cluster.bootTokenMinutes ?? DEFAULT_BOOT_TOKEN_MINUTES) * 60_000);
  const enrollTokens = new EnrollTokens(db, now);
  const bootAddresses = new BootAddresses(now);
  const timeline = new BootTimeline(db, commits, now);
  const metrics = new MetricsRegistry();
  const catalog = new ImageCatalog({
    defaultDir: config.imageDir,
    libraryDir: config.imagesDir,
    fingerprint: secrets.identity.fingerprint,
    log: log.child({ svc: 'images' }),
    now,
  });
  const releases = new ImageReleases(db, commits, now);
  const images = { catalog, releases, assignments: new ImageAssignments(catalog, releases, cluster) };
  return {
    config,
    log,
    db,
    commits,
    checkpointer,
    events,
    nodes,
    cluster,
    secrets,
    bootTokens,
    enrollTokens,
    bootAddresses,
    timeline,
    metrics,
    images,
    network: opts.network,
    nodeHealth: new NodeHealthMonitor({ db, commits, events, nodes, log: log.child({ svc: 'node-health' }), cluster, now }),
    ...(opts.shared ? { shared: opts.shared } : {}),
    now,
    startedAt: now(),
  };
}

/**
 * Flushes pending writes and closes the store. The SQLite store closes before this returns;
 * the PostgreSQL store ships what is left first (the promise).
 */
export function closeCore(core: Core): Promise<void> {
  const close = () => {
    core.commits.close();
    core.checkpointer.stop();
    core.db.close();
  };
  const shared = core.shared;
  if (!shared) {
    close();
    return Promise.resolve();
  }
  return core.commits
    .drain()
    .catch((err: unknown) => core.log.warn({ err: (err as Error).message }, 'changes not shipped to PostgreSQL at stop'))
    .then(close)
    .then(() => shared.close());
}

function tmpSecretsDir(): string {
  return `/tmp/lilcluster-secrets-${process.pid}`;
}
