/**
 * A dispatcher on the PostgreSQL store (`--store postgres://…`): checks the database, serves
 * the standby page while another dispatcher leads, and when it holds the leader lock starts
 * every service on the state it loaded, as after a restart: running tasks re-adopted when
 * their agents reconnect, DHCP leases kept. If another dispatcher leads while this one was
 * cut off from the database, it exits (code 75) so that its supervisor starts it again as a
 * standby.
 */
import { networkInterfaces } from 'node:os';
import type { DispatcherConfig } from '../config.js';
import type { Logger } from '../log.js';
import { resolveNodeNetwork } from '../net/interfaces.js';
import { startDispatcher, type RunningDispatcher } from '../server.js';
import { allMigrations } from '../store/migrations.js';
import { parseStoreUrl } from '../store/postgres/connection.js';
import { checkDatabase, takeLead } from '../store/postgres/shared-store.js';
import { startStandbyServer } from './standby-server.js';

/** Exit code of a leader replaced while it was away from the database (EX_TEMPFAIL). */
export const EXIT_REPLACED = 75;

export async function startSharedDispatcher(opts: { config: DispatcherConfig; log: Logger }): Promise<RunningDispatcher> {
  const { config, log } = opts;
  const store = parseStoreUrl(config.store ?? '');
  const network = resolveNodeNetwork(config.interface, config.advertiseAddress);
  await checkDatabase(store, allMigrations);
  const self = selfUrl(config, network.address);
  const standby = await startStandbyServer({ host: config.httpHost, port: config.httpPort, self, log });
  let shared: Awaited<ReturnType<typeof takeLead>>;
  try {
    shared = await takeLead({
      store,
      self: { url: self },
      migrations: allMigrations,
      dataDir: config.dataDir,
      log,
      onStandby: (leader) => standby.setLeader(leader),
      onLeadershipLost: (err) => {
        log.fatal({ leader: err.now?.url ?? null, epoch: err.now?.epoch ?? null }, err.message);
        process.exit(EXIT_REPLACED);
      },
    });
  } finally {
    await standby.close();
  }
  return startDispatcher({ config, log, shared });
}

/**
 * This dispatcher's own URL, as standbys name it: the `peers` entry on one of this machine's
 * addresses (the advertised address may be a virtual IP that moves), else the advertised one.
 */
export function selfUrl(config: Pick<DispatcherConfig, 'peers' | 'httpPort'>, advertised: string): string {
  const own = new Set(
    Object.values(networkInterfaces())
      .flat()
      .map((i) => i?.address),
  );
  for (const peer of config.peers ?? []) {
    try {
      const u = new URL(peer);
      if (own.has(u.hostname)) return u.origin;
    } catch {
      /* not a URL: config validation names it */
    }
  }
  return `http://${advertised}:${config.httpPort}`;
}
