/**
 * `dispatcher --role boot --leader URL`: a boot server on another segment. It runs the
 * dispatcher's own boot services on its segment, with its own store in its data dir (DHCP
 * leases, the segment's boot timeline), and asks the leader for everything that decides a boot:
 *
 *   DHCP (full or proxy) and TFTP      as the dispatcher does (dhcp/, tftp/), on --interface
 *   /boot.ipxe?mac=                     the leader writes the script (leader-client.ts), asked
 *                                       with the client's MAC and address under this boot
 *                                       server's token; its files point here, its lc.dispatcher=
 *                                       at the leader
 *   /image/<name>/<version>/<file>      from the cache, filled from the leader by sha256 (cache.ts)
 *   boot timeline                       forwarded to the leader (forwarder.ts)
 *   heartbeat                           its URL, cache and errors, for the leader's list
 *
 * Nodes' agents connect to the leader; the boot server holds no tasks and no agents.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DispatcherConfig } from '../config.js';
import type { Logger } from '../log.js';
import { DispatcherError } from '../errors.js';
import { VERSION } from '../version.js';
import { createCore, closeCore, type Core } from '../core.js';
import { buildApp } from '../http/app.js';
import { resolveNodeNetwork } from '../net/interfaces.js';
import { startBootServices } from '../boot/services.js';
import { refusedScript } from '../boot/ipxe-script.js';
import { startDhcp } from '../dhcp/server.js';
import type { BootServerReport } from '../api/boot-servers/schemas.js';
import { ImageCache } from './cache.js';
import { LeaderClient } from './leader-client.js';
import { SegmentImages } from './image-source.js';
import { BootEventForwarder } from './forwarder.js';

export const LEADER_TOKEN_FILE = 'leader.token';
/** Seconds a client waits before asking again when the leader cannot be reached. */
export const LEADER_DOWN_RETRY_SECONDS = 10;

export interface RunningBootServer {
  core: Core;
  httpPort: number;
  /** `http://<address>:<port>`: where this segment's clients fetch their boot files. */
  url: string;
  cache: ImageCache;
  forwarder: BootEventForwarder;
  report(): BootServerReport;
  stop(): Promise<void>;
}

export async function startBootServer(opts: { config: DispatcherConfig; log: Logger }): Promise<RunningBootServer> {
  const { config } = opts;
  const log = opts.log.child({ role: 'boot' });
  if (!config.leader) throw new DispatcherError('DSP_ERR_CONFIG', 'role boot needs --leader URL');
  const leaderUrl = config.leader;
  const token = readLeaderToken(config.leaderTokenFile ?? join(config.dataDir, LEADER_TOKEN_FILE));
  const network = resolveNodeNetwork(config.interface, config.advertiseAddress);
  const core = createCore({ config, log, network });
  const leader = new LeaderClient(leaderUrl, token);
  const cache = new ImageCache({ dataDir: config.dataDir, origin: leader, log: log.child({ svc: 'boot-cache' }), now: core.now });
  const images = new SegmentImages({ cache, manifest: (i, v) => leader.manifest(i, v), log: log.child({ svc: 'boot-cache' }) });

  const forwarder = new BootEventForwarder(
    core.timeline,
    (batch) => leader.events(batch),
    (err) => cache.noteError(`boot events not forwarded yet: ${err.message}`, {}),
  );
  const boot = await startBootServices(core, {
    imageSource: (image, version) => images.source(image, version),
    scriptSource: async ({ mac, ip, dispatcherUrl }) => {
      try {
        // The DHCP stages of this boot reach the leader before the script it records.
        await forwarder.flush().catch(() => undefined);
        const a = await leader.script({ mac, ip, bootUrl: dispatcherUrl, leaderUrl });
        if (a.image) {
          // The client asks for these files within a second: start the downloads now.
          images.prefetch(a.image.image, a.image.version);
          // Its downloads land on its timeline by the MAC in their URLs, which must be a known node here
          // (DHCP on this segment registers it too; not with --dhcp off).
          core.nodes.admit(mac);
        }
        return { status: a.status, text: a.script };
      } catch (err) {
        cache.noteError(`no boot script from the leader: ${(err as Error).message}`, { mac, ip });
        const reason = `the leader cannot give its boot script now (${(err as Error).message})`;
        return { status: 200, text: refusedScript({ mac, dispatcherUrl, reason, retrySeconds: LEADER_DOWN_RETRY_SECONDS }) };
      }
    },
  });
  let url = '';
  const report = (): BootServerReport => ({
    url,
    version: VERSION,
    interface: network.name ?? null,
    dhcp: config.dhcp.mode,
    cache: cache.stats(),
    errors: cache.errors(),
    eventsDropped: forwarder.dropped,
  });

  const app = await buildApp(core, [
    ...boot.plugins,
    {
      name: 'boot-server-status',
      plugin: async (a) => {
        a.get('/api/v1/boot-server/status', async () => ({ role: 'boot', leader: leaderUrl, eventsQueued: forwarder.queued, ...report() }));
      },
    },
  ]);
  const stopAll = async () => {
    await forwarder.stop();
    await boot.stop();
    await app.close();
    // Awaited: closing the store may be asynchronous (a shared store).
    await closeCore(core);
  };
  await app.listen({ port: config.httpPort, host: config.httpHost });
  const addr = app.server.address();
  const httpPort = typeof addr === 'object' && addr ? addr.port : config.httpPort;
  url = `http://${network.address}:${httpPort}`;
  const dhcp = await startDhcp(core, { httpPort }).catch(async (err: unknown) => {
    await stopAll();
    throw err;
  });

  // Heartbeat: the leader's list shows this boot server, its cache and its errors.
  let beating = true;
  let timer: NodeJS.Timeout | undefined;
  let leaderUp: boolean | undefined;
  const beat = async () => {
    let next = config.heartbeatSeconds;
    try {
      next = (await leader.heartbeat(report())).heartbeatSeconds;
      if (leaderUp !== true) log.info({ leader: leaderUrl }, 'leader reached');
      leaderUp = true;
    } catch (err) {
      if (leaderUp !== false) cache.noteError(`heartbeat not taken by the leader: ${(err as Error).message}`, { leader: leaderUrl });
      leaderUp = false;
    }
    if (beating) timer = setTimeout(beat, Math.max(1, next) * 1000);
  };
  void beat();

  log.info(
    {
      version: VERSION,
      role: 'boot',
      leader: leaderUrl,
      interface: network.name,
      address: network.address,
      httpPort,
      dhcp: config.dhcp.mode,
    },
    'dispatcher started',
  );
  return {
    core,
    httpPort,
    url,
    cache,
    forwarder,
    report,
    async stop() {
      beating = false;
      if (timer) clearTimeout(timer);
      await dhcp.stop();
      await stopAll();
    },
  };
}

function readLeaderToken(path: string): string {
  let token: string;
  try {
    token = readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw new DispatcherError('DSP_ERR_CONFIG', `cannot read the boot server's token from ${path}: ${(err as Error).message}`, {
      cause: err,
      hint: 'on the leader: dispatcherctl boot-server add NAME; write the token it prints to that file (mode 0600) or pass --leader-token-file',
    });
  }
  if (!token) throw new DispatcherError('DSP_ERR_CONFIG', `${path} is empty: it must hold the boot server's token`);
  return token;
}
