/**
 * The netconsole receiver: UDP on the node network (port 6666, netconsole's own default;
 * the image's /init points every node's kernel at it, see image/README.md), lines filed under
 * the node whose address sent them (DHCP's lease, else the neighbour table:
 * boot/client-mac.ts). A datagram from an address that is no node is dropped; a node over
 * its line budget has the rest dropped and counted, and one line on record says how many.
 * Not fatal when the port is taken: the dispatcher runs on without kernel capture.
 */
import { createSocket, type Socket } from 'node:dgram';
import type { Core } from '../core.js';
import { RateLimitedLog } from '../log.js';
import { ClientMacLookup, plainIPv4, type ClientMacSource } from '../boot/client-mac.js';
import { bindToIfindex, setSocketOption, SOL_SOCKET, SO_RCVBUFFORCE } from '../net/socket-options.js';
import type { Mac } from '../nodes/mac.js';
import { LineBudget, parseDatagram } from './lines.js';
import { consoleLogOf, type ConsoleLog } from './store.js';

/** UDP port netconsole sends to unless told otherwise (`lc.netconsole=PORT` on the node). */
export const NETCONSOLE_PORT = 6666;
/** Lines a node may file per second on average, and at once (a panic or a boot is a few hundred). */
export const NETCONSOLE_LINES_PER_SECOND = 200;
export const NETCONSOLE_BURST_LINES = 2000;
/**
 * Receive buffer: when netconsole starts, the kernel replays its whole log at once (hundreds
 * of datagrams within milliseconds), more than the default 208 KiB holds while the event loop
 * is busy. SO_RCVBUFFORCE (we are root) lifts net.core.rmem_max, as for DHCP.
 */
export const NETCONSOLE_RECV_BUFFER_BYTES = 4 * 1024 * 1024;

export interface NetconsoleCounters {
  datagrams: number;
  lines: number;
  /** Datagrams, lines or datagram counts cut to their bound. */
  truncated: number;
  /** Datagrams from an address that is no known node. */
  unknownSource: number;
  /** Lines over a node's budget. */
  floodDropped: number;
}

export interface StartNetconsoleOptions {
  port?: number;
  host?: string;
  macs?: ClientMacSource;
  log?: ConsoleLog;
  linesPerSecond?: number;
  burstLines?: number;
}

export interface RunningNetconsole {
  /** The port bound, or undefined when it could not be. */
  port: number | undefined;
  counters(): NetconsoleCounters;
  stop(): Promise<void>;
}

export async function startNetconsole(core: Core, opts: StartNetconsoleOptions = {}): Promise<RunningNetconsole> {
  const log = core.log.child({ svc: 'netconsole' });
  const noisy = new RateLimitedLog(log);
  const store = opts.log ?? consoleLogOf(core.db);
  const macs = opts.macs ?? new ClientMacLookup(core.nodes);
  const rate = opts.linesPerSecond ?? NETCONSOLE_LINES_PER_SECOND;
  const burst = opts.burstLines ?? NETCONSOLE_BURST_LINES;
  const c: NetconsoleCounters = { datagrams: 0, lines: 0, truncated: 0, unknownSource: 0, floodDropped: 0 };
  /** Per node: its budget and the lines dropped since it last had room. Bounded by the node count. */
  const budgets = new Map<Mac, { budget: LineBudget; dropped: number }>();
  const unsubscribe = core.nodes.onForget((mac) => {
    budgets.delete(mac);
    store.forget(mac);
  });

  const onMessage = (data: Buffer, rinfo: { address: string; port: number }) => {
    c.datagrams++;
    const address = plainIPv4(rinfo.address);
    const mac = macs.macOf(address);
    if (!mac || !core.nodes.byMac(mac)) {
      c.unknownSource++;
      noisy.warn(
        `unknown:${address}`,
        { peer: address, port: rinfo.port, bytes: data.length },
        'netconsole datagram from an address that is no node: dropped',
      );
      return;
    }
    const { lines, truncated } = parseDatagram(data);
    if (truncated) {
      c.truncated++;
      noisy.debug(`cut:${mac}`, { peer: address, mac, bytes: data.length }, 'netconsole datagram over its bound: cut');
    }
    if (lines.length === 0) return;
    const now = core.now();
    let b = budgets.get(mac);
    if (!b) {
      b = { budget: new LineBudget(rate, burst, now), dropped: 0 };
      budgets.set(mac, b);
    }
    // After a flood, the first line with room says how many were lost.
    const marker = b.dropped > 0 ? 1 : 0;
    const granted = b.budget.take(lines.length + marker, now);
    const kept = lines.slice(0, Math.max(0, granted - marker));
    const out = marker && granted > 0 ? [`[lilcluster: ${b.dropped} kernel console lines dropped: over ${rate} lines/s]`, ...kept] : kept;
    if (granted > 0) b.dropped = 0;
    const over = lines.length - kept.length;
    if (over > 0) {
      if (b.dropped === 0)
        noisy.warn(
          `flood:${mac}`,
          { peer: address, mac, linesPerSecond: rate },
          'netconsole lines over the node budget: dropping until it has room again',
        );
      b.dropped += over;
      c.floodDropped += over;
    }
    c.lines += kept.length;
    if (out.length === 0) return;
    store.append(mac, 'kernel', out, now);
  };

  const socket = await bindSocket(core, opts, onMessage, log);
  // Read at scrape time; a receiver started again on this core replaces the old figures.
  const METRIC = 'lilcluster_netconsole_total';
  core.metrics.recollect({
    name: METRIC,
    help: 'netconsole input by kind: datagrams, lines stored, truncated datagrams, datagrams from no node, lines dropped over the flood budget',
    type: 'counter',
    labelNames: ['kind'],
    collect: () => Object.entries(c).map(([kind, value]) => ({ labels: { kind }, value })),
  });
  const port = socket ? (socket.address() as { port: number }).port : undefined;
  if (socket)
    log.info(
      { port, interface: core.network.name ?? null, recvBuffer: socket.getRecvBufferSize() },
      'netconsole listening (kernel console lines of the nodes)',
    );

  return {
    port,
    counters: () => ({ ...c }),
    async stop() {
      unsubscribe();
      core.metrics.remove(METRIC);
      if (socket) await new Promise<void>((resolve) => socket.close(() => resolve()));
      store.flush();
      if (c.datagrams > 0) log.info({ counters: c }, 'netconsole stopped');
    },
  };
}

/** The socket, bound to the node interface when there is one; undefined when the port is taken. */
async function bindSocket(
  core: Core,
  opts: StartNetconsoleOptions,
  onMessage: (data: Buffer, rinfo: { address: string; port: number }) => void,
  log: Core['log'],
): Promise<Socket | undefined> {
  const ifindex = core.network.ifindex;
  const port = opts.port ?? NETCONSOLE_PORT;
  const attempt = (host: string, restrict: boolean) =>
    new Promise<Socket>((resolve, reject) => {
      const s = createSocket({ type: 'udp4', reuseAddr: false });
      s.once('error', reject);
      s.bind({ port, address: host, exclusive: true }, () => {
        s.off('error', reject);
        try {
          if (restrict && ifindex !== undefined) bindToIfindex(s, ifindex);
        } catch (err) {
          s.close();
          reject(err);
          return;
        }
        try {
          setSocketOption(s, SOL_SOCKET, SO_RCVBUFFORCE, NETCONSOLE_RECV_BUFFER_BYTES);
        } catch {
          try {
            s.setRecvBufferSize(NETCONSOLE_RECV_BUFFER_BYTES);
          } catch {
            /* the default: a replayed boot log may lose lines, counted by the kernel (RcvbufErrors) */
          }
        }
        s.on('error', (err) => log.error({ err: err.message }, 'netconsole socket error'));
        s.on('message', onMessage);
        resolve(s);
      });
    });
  const host = opts.host ?? '0.0.0.0';
  try {
    return await attempt(host, host === '0.0.0.0');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES') {
      log.warn(
        { port, err: (err as Error).message },
        `cannot listen on UDP port ${port} for netconsole: nodes' kernel messages are not captured (is another netconsole receiver running?)`,
      );
      return undefined;
    }
    if (ifindex === undefined || host !== '0.0.0.0') throw err;
    log.warn(
      { err: (err as Error).message, address: core.network.address },
      'cannot bind the netconsole socket to the interface; listening on its address',
    );
    return attempt(core.network.address, false).catch((e: unknown) => {
      log.warn({ port, err: (e as Error).message }, 'netconsole not listening: kernel messages are not captured');
      return undefined;
    });
  }
}
