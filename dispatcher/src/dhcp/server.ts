/**
 * The DHCP service: UDP sockets on port 67 (and 4011 in proxy mode), restricted to the node
 * network's interface, feeding decoded packets to the full- or proxy-mode handler and
 * sending what it answers. Malformed input is counted, logged (rate-limited) and dropped;
 * only a dead socket stops the service.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { bindToIfindex, setSocketOption, SOL_SOCKET, SO_RCVBUFFORCE } from '../net/socket-options.js';
import type { Core } from '../core.js';
import { DispatcherError } from '../errors.js';
import { RateLimitedLog, type Logger } from '../log.js';
import { decodePacket, DecodeError, encodePacket, type ReceivedPacket } from './codec.js';
import { DEFAULT_MAX_MESSAGE, PXE_PORT, SERVER_PORT } from './options.js';
import { LeaseStore } from './leases.js';
import { AddressPool } from './allocator.js';
import { planAddresses, type AddressPlan } from './settings.js';
import { FullModeHandler } from './full-mode.js';
import { ProxyModeHandler } from './proxy-mode.js';
import { intToIp } from './ipv4.js';
import { newCounters, type Answer, type DhcpContext, type DhcpCounters } from './context.js';
import type { Destination } from './policy.js';
import type { DhcpMode } from '../config.js';
import { startRouterAdvertiser, type RouterAdvertiser } from '../boot/router-advert.js';

/**
 * Receive buffer for the DHCP sockets: a 300-client storm sends its DISCOVERs within a few
 * ms, and dnsmasq's default 208 KiB buffer dropped 133 of them. SO_RCVBUFFORCE (we are root)
 * lifts net.core.rmem_max; the kernel doubles the value for its bookkeeping.
 */
export const DHCP_RECV_BUFFER_BYTES = 8 * 1024 * 1024;
/**
 * The interface filter applies just after bind(): a datagram from another interface could
 * slip into the queue in between. What arrives this soon after binding is dropped
 * (clients retransmit).
 */
export const BIND_SETTLE_MS = 50;
const SWEEP_INTERVAL_MS = 30_000;

export interface DhcpService {
  readonly mode: DhcpMode;
  readonly counters: Readonly<DhcpCounters>;
  /** Leases in the store, addresses in the pool, outstanding offers (full mode). */
  stats(): { leases: number; poolSize: number; offers: number };
  stop(): Promise<void>;
}

export interface StartDhcpOptions {
  /** The HTTP port actually listened on (boot URLs); default core.config.httpPort. */
  httpPort?: number;
  /** Ports to listen on (tests); defaults 67 and 4011. */
  dhcpPort?: number;
  pxePort?: number;
}

export async function startDhcp(core: Core, opts: StartDhcpOptions = {}): Promise<DhcpService> {
  const mode = core.config.dhcp.mode;
  const log = core.log.child({ svc: 'dhcp' });
  const counters = newCounters();
  if (mode === 'off') {
    log.info('DHCP off: another DHCP server must send machines to this dispatcher (see README, "--dhcp off")');
    return { mode, counters, stats: () => ({ leases: 0, poolSize: 0, offers: 0 }), stop: async () => {} };
  }

  const ctx = createDhcpContext(core, log, counters, opts.httpPort ?? core.config.httpPort);
  const { ifindex, name: ifname } = core.network;
  if (ifindex === undefined) log.warn({ mode }, 'no --interface: DHCP answers on every interface');

  const sockets: Socket[] = [];
  const inflight = new Set<Promise<void>>();
  let sweep: NodeJS.Timeout | undefined;
  let stats = () => ({ leases: 0, poolSize: 0, offers: 0 });
  let flushLeases = () => {};
  let unsubscribe = () => {};
  let routerAdvert: RouterAdvertiser | undefined;

  const serve = async (
    port: number,
    handle: (p: ReceivedPacket, from: Destination) => Answer | Promise<Answer>,
    sharing: PortSharing = 'exclusive',
  ) => {
    const sock = await openSocket(port, ifindex, ifname, log, sharing);
    sockets.push(sock.socket);
    attach(sock, handle, ctx, inflight);
  };

  try {
    if (mode === 'full') {
      const { plan, leases, pool, handler } = createFullMode(core, ctx);
      stats = () => ({ leases: leases.size, poolSize: pool.size, offers: pool.outstandingOffers });
      await serve(opts.dhcpPort ?? SERVER_PORT, (p) => handler.handle(p));
      sweep = setInterval(() => pool.sweep(core.now()), SWEEP_INTERVAL_MS).unref();
      flushLeases = () => leases.flush();
      unsubscribe = core.nodes.onForget((mac) => leases.forget(mac));
      // Spares iPXE its 16 s wait for an IPv6 router (boot/router-advert.ts): full mode only,
      // where the node network is ours.
      if (ifindex !== undefined) routerAdvert = startRouterAdvertiser(ifindex, log);
      log.info(
        {
          mode,
          interface: ifname,
          range: `${intToIp(plan.pool.rangeStart)}-${intToIp(plan.pool.rangeEnd)}`,
          netmask: plan.subnetMask,
          leases: leases.size,
          leaseSeconds: core.config.dhcp.leaseSeconds,
        },
        'DHCP serving',
      );
    } else {
      const handler = new ProxyModeHandler(ctx, core.network.address);
      await serve(opts.dhcpPort ?? SERVER_PORT, (p) => handler.handleDhcpPort(p), 'broadcasts-if-taken');
      await serve(opts.pxePort ?? PXE_PORT, (p, from) => handler.handlePxePort(p, from));
      log.info({ mode, interface: ifname, address: core.network.address }, 'ProxyDHCP serving (boot information only)');
    }
  } catch (err) {
    for (const s of sockets) s.close();
    throw err;
  }

  registerMetrics(core, counters, () => stats());
  return {
    mode,
    counters,
    stats: () => stats(),
    async stop() {
      if (sweep) clearInterval(sweep);
      unsubscribe();
      const ra = routerAdvert?.stats();
      routerAdvert?.stop();
      await Promise.all(sockets.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
      flushLeases();
      await Promise.allSettled([...inflight]);
      const g = core.commits.stats;
      log.info(
        {
          counters,
          ...stats(),
          ...(ra ? { routerSolicitations: ra.solicitations, routerAdvertisements: ra.advertisements } : {}),
          storeCommits: g.commits,
          storeWrites: g.writes,
          avgCommitMs: g.commits ? +(g.totalCommitMs / g.commits).toFixed(2) : 0,
        },
        'DHCP stopped',
      );
    },
  };
}

/** The handlers' view of the core (also what unit tests build handlers on). */
export function createDhcpContext(core: Core, log: Logger, counters: DhcpCounters, httpPort: number): DhcpContext {
  return {
    nodes: core.nodes,
    timeline: core.timeline,
    site: { address: core.network.address, httpPort },
    log,
    limited: new RateLimitedLog(log),
    counters,
    now: core.now,
    bootAddresses: core.bootAddresses,
  };
}

/** Full mode on a core: the address plan, the lease store and pool, and the handler. */
export function createFullMode(
  core: Core,
  ctx: DhcpContext,
): { plan: AddressPlan; leases: LeaseStore; pool: AddressPool; handler: FullModeHandler } {
  const plan = planAddresses(core.config.dhcp, core.network, { list: () => core.nodes.list(), now: core.now });
  plan.reservations.onWarning = (w) => ctx.log.warn({ mac: w.mac, ip: w.ip, reason: w.reason }, 'reservation ignored');
  plan.reservations.warnings(); // report the cluster file's at start
  const leases = new LeaseStore(core.db, core.commits);
  const pool = new AddressPool(plan.pool, leases);
  const handler = new FullModeHandler(ctx, pool, leases, {
    serverId: core.network.address,
    subnetMask: plan.subnetMask,
    routers: core.config.dhcp.router ? [core.config.dhcp.router] : [],
    dns: core.config.dhcp.dns ?? [],
    leaseSeconds: core.config.dhcp.leaseSeconds,
    leaseCacheThreshold: core.config.dhcp.leaseCacheThreshold,
  });
  return { plan, leases, pool, handler };
}

/** Pull collectors on core.metrics: read at scrape time, nothing to keep in step. */
function registerMetrics(core: Core, counters: DhcpCounters, stats: () => { leases: number; poolSize: number; offers: number }): void {
  const m = core.metrics;
  // A DHCP service started again on this core (a restart in-process) replaces the old figures.
  for (const name of ['lilcluster_dhcp_packets_total', 'lilcluster_dhcp_leases', 'lilcluster_dhcp_pool_addresses'])
    if (m.has(name)) m.remove(name);
  m.collect({
    name: 'lilcluster_dhcp_packets_total',
    help: 'DHCP packets by kind: received, malformed, dropped, and per message type',
    type: 'counter',
    labelNames: ['kind'],
    collect: () => Object.entries(counters).map(([kind, value]) => ({ labels: { kind }, value })),
  });
  m.collect({
    name: 'lilcluster_dhcp_leases',
    help: 'DHCP lease records in the store (full mode)',
    type: 'gauge',
    collect: () => stats().leases,
  });
  m.collect({
    name: 'lilcluster_dhcp_pool_addresses',
    help: 'Addresses in the dynamic range (full mode)',
    type: 'gauge',
    collect: () => stats().poolSize,
  });
}

function attach(
  sock: { socket: Socket; armedAt: number },
  handle: (p: ReceivedPacket, from: Destination) => Answer | Promise<Answer>,
  ctx: DhcpContext,
  inflight: Set<Promise<void>>,
): void {
  const { socket } = sock;
  const { counters, limited } = ctx;
  let open = true;
  socket.on('close', () => (open = false));

  const send = (req: ReceivedPacket, answer: Answer) => {
    if (!answer || !open) return;
    let bytes: Buffer;
    try {
      // Option 57 counts the IP and UDP headers (28 bytes); never below the 576-byte minimum.
      const maxLength = Math.max(DEFAULT_MAX_MESSAGE, (req.maxMessageSize ?? 0) - 28);
      bytes = encodePacket(answer.reply, { maxLength });
    } catch (err) {
      counters.dropped++;
      limited.warn('encode-failed', { mac: req.mac, err: (err as Error).message }, 'reply could not be encoded');
      return;
    }
    socket.send(bytes, answer.to.port, answer.to.address, (err) => {
      if (!err) return;
      counters.sendErrors++;
      limited.warn(
        `send:${(err as NodeJS.ErrnoException).code}`,
        { to: answer.to.address, port: answer.to.port, err: err.message },
        'reply not sent',
      );
    });
  };

  socket.on('message', (msg: Buffer, rinfo: RemoteInfo) => {
    counters.received++;
    if (performance.now() < sock.armedAt) {
      counters.dropped++;
      return;
    }
    const req = decodePacket(msg);
    if (req instanceof DecodeError) {
      counters.malformed++;
      limited.debug(
        `malformed:${req.field}`,
        { peer: rinfo.address, port: rinfo.port, bytes: msg.length, field: req.field, error: req.message },
        'malformed DHCP packet dropped',
      );
      return;
    }
    let answer: Answer | Promise<Answer>;
    try {
      answer = handle(req, { address: rinfo.address, port: rinfo.port });
    } catch (err) {
      counters.dropped++;
      limited.warn('handler-failed', { mac: req.mac, err: (err as Error)?.stack ?? String(err) }, 'DHCP handler failed');
      return;
    }
    if (!(answer instanceof Promise)) return send(req, answer);
    const done: Promise<void> = answer.then(
      (a) => send(req, a),
      (err: unknown) => {
        counters.dropped++;
        limited.warn('handler-failed', { mac: req.mac, err: (err as Error)?.stack ?? String(err) }, 'DHCP handler failed');
      },
    );
    inflight.add(done);
    void done.finally(() => inflight.delete(done));
  });

  socket.on('error', (err) => {
    // A send error is reported to its callback; anything here means the socket is unusable.
    ctx.log.error({ err: err.message }, 'DHCP socket error');
  });
}

/**
 * `exclusive`: the port is ours (full mode, port 4011). `broadcasts-if-taken` (port 67 in proxy
 * mode): when another DHCP server on this host holds port 67, as in a small lab where dnsmasq
 * hands out the addresses, share it the way ProxyDHCP needs: bind 255.255.255.255:67 with
 * SO_REUSEADDR. Such a socket gets every broadcast to port 67 (the kernel delivers broadcasts
 * to all matching sockets) but no unicast, so the other server keeps its renewals; its replies
 * leave from the interface's address (a broadcast-bound socket sends with the routed source).
 * The other server must allow the sharing (SO_REUSEADDR: dnsmasq does with bind-interfaces).
 */
export type PortSharing = 'exclusive' | 'broadcasts-if-taken';

async function openSocket(
  port: number,
  ifindex: number | undefined,
  ifname: string | undefined,
  log: Logger,
  sharing: PortSharing = 'exclusive',
): Promise<{ socket: Socket; armedAt: number }> {
  let socket: Socket;
  try {
    socket = await bindUdp(port, '0.0.0.0', false);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EADDRINUSE' || sharing === 'exclusive') throw bindError(port, err as NodeJS.ErrnoException, sharing);
    try {
      socket = await bindUdp(port, '255.255.255.255', true);
    } catch (shared) {
      throw bindError(port, shared as NodeJS.ErrnoException, sharing);
    }
    log.info(
      { port, interface: ifname },
      'another DHCP server holds port 67 on this host: ProxyDHCP shares it for broadcasts (relayed requests reach that server, not this one)',
    );
  }
  try {
    if (ifindex !== undefined) bindToIfindex(socket, ifindex);
  } catch (err) {
    socket.close();
    throw new DispatcherError('DSP_ERR_CONFIG', `cannot restrict DHCP port ${port} to interface ${ifname}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  socket.setBroadcast(true);
  try {
    setSocketOption(socket, SOL_SOCKET, SO_RCVBUFFORCE, DHCP_RECV_BUFFER_BYTES);
  } catch {
    try {
      socket.setRecvBufferSize(DHCP_RECV_BUFFER_BYTES);
    } catch {
      /* keep the default; the effective size is logged below */
    }
  }
  log.debug({ port, interface: ifname, recvBuffer: socket.getRecvBufferSize() }, 'DHCP socket open');
  return { socket, armedAt: performance.now() + BIND_SETTLE_MS };
}

function bindUdp(port: number, address: string, reuseAddr: boolean): Promise<Socket> {
  const socket = createSocket({ type: 'udp4', reuseAddr });
  return new Promise<Socket>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      socket.close();
      reject(err);
    };
    socket.once('error', onError);
    socket.bind({ port, address, exclusive: true }, () => {
      socket.off('error', onError);
      resolve(socket);
    });
  });
}

function bindError(port: number, err: NodeJS.ErrnoException, sharing: PortSharing): DispatcherError {
  const inUse = err.code === 'EADDRINUSE';
  const why = inUse
    ? sharing === 'exclusive'
      ? 'already in use (another DHCP server such as dnsmasq?)'
      : 'held by another DHCP server that does not share it (no SO_REUSEADDR)'
    : err.code === 'EACCES'
      ? 'permission denied (run as root)'
      : err.message;
  const hint = !inUse
    ? undefined
    : sharing === 'exclusive'
      ? 'stop the other DHCP server, or run the dispatcher with --dhcp proxy (it shares port 67 with a server that allows it) or --dhcp off'
      : 'let the other server share the port (dnsmasq: bind-interfaces or bind-dynamic), or run the dispatcher with --dhcp off and point that server at it';
  return new DispatcherError('DSP_ERR_CONFIG', `cannot listen on DHCP port ${port}: ${why}`, { hint, cause: err });
}
