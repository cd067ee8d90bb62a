/**
 * The TFTP service: a read-only virtual tree (iPXE first stages, and the kernel and initrd
 * for clients that cannot speak HTTP) served from memory. Requests are decoded and decided
 * here (codec.ts, tree.ts); the `tftp` package runs the transfers behind node-tftp.ts, the one
 * file that touches it (see README.md beside this file). Transfers are
 * bounded with a FIFO queue, so a boot storm waits instead of failing; each one is logged
 * with bytes and duration and recorded on the boot timeline of the client's MAC.
 */
import type { Core } from '../core.js';
import { RateLimitedLog } from '../log.js';
import { DispatcherError } from '../errors.js';
import { BOOT_FILES, BootFiles, PXE_FILES, type BootFileName } from '../boot/boot-files.js';
import { ClientMacLookup, type ClientMacSource } from '../boot/client-mac.js';
import { FifoLimiter } from '../boot/limiter.js';
import { recordStage } from '../boot/record-stage.js';
import { TftpDecodeError, TftpErrorCode, TftpOpcode, decodeRequest, encodeError, encodeRequest, opcodeOf, printable } from './codec.js';
import { decideRequest } from './tree.js';
import { startNodeTftp, type NodeTftpServer, type PacketVerdict, type Peer, type TftpTransfer, type TransferOutcome } from './node-tftp.js';

/** Largest blksize granted: 1468 keeps a DATA packet within a 1500-byte Ethernet MTU (RFC 2348). */
export const DEFAULT_TFTP_MAX_BLKSIZE = 1468;
/** Largest windowsize granted (RFC 7440); clients that ask less get what they ask. */
export const DEFAULT_TFTP_MAX_WINDOWSIZE = 64;
/**
 * Transfers running at once; more wait in the queue (StartTftpOptions overrides). A transfer
 * costs little (a socket and a timer; bytes come from memory), and lock-step clients hold a
 * slot for many round trips, so the bound is wide: it stops a flood, not a storm.
 */
export const DEFAULT_TFTP_MAX_TRANSFERS = 512;
/** Requests waiting for a slot; beyond this the client is told to retry. */
export const DEFAULT_TFTP_MAX_QUEUE = 2048;
/** Retransmission of DATA/OACK when the client does not ACK. */
export const DEFAULT_TFTP_TIMEOUT_MS = 1000;
export const DEFAULT_TFTP_RETRIES = 5;
/**
 * A queued request whose client has not repeated its RRQ for this long is dropped when its
 * turn comes: the client has given up (PXE ROMs retry every 1-4 s, for 10-30 s), and serving
 * it would hold a slot until our own retransmissions time out.
 */
export const TFTP_CLIENT_GAVE_UP_MS = 8_000;
/** Waiting entries are swept past this size (entries whose request never became a transfer). */
const WAITING_SWEEP_SIZE = 8192;
/** Error replies per second on port 69 (so the server cannot be used as a reflector). */
const REFUSALS_PER_SECOND = 200;

export interface TftpCounters {
  requests: number;
  completed: number;
  failed: number;
  /** EDK2-style size probes: RRQ with tsize, ERROR after the OACK. */
  sizeProbes: number;
  refused: number;
  malformed: number;
  /** Retransmitted RRQs for a request already waiting. */
  duplicates: number;
  /** Turned away because the queue was full. */
  busy: number;
  /** Dropped from the queue: the client had stopped asking. */
  abandoned: number;
  /** Packets on a transfer socket from a stranger, or runts. */
  stray: number;
  bytesSent: number;
  active: number;
  queued: number;
}

export interface StartTftpOptions {
  files?: BootFiles;
  macs?: ClientMacSource;
  host?: string;
  port?: number;
  maxTransfers?: number;
  maxQueue?: number;
  maxBlksize?: number;
  maxWindowsize?: number;
  timeoutMs?: number;
  retries?: number;
}

export interface RunningTftp {
  port: number;
  counters(): TftpCounters;
  stop(): Promise<void>;
}

interface RequestContext {
  name: BootFileName;
  key: string;
  receivedAt: number;
  ignoredOptions: string[];
}

export async function startTftp(core: Core, opts: StartTftpOptions = {}): Promise<RunningTftp> {
  const log = core.log.child({ svc: 'tftp' });
  const noisy = new RateLimitedLog(log);
  const now = core.now;
  const files = opts.files ?? new BootFiles({ imageDir: core.config.imageDir, pxeDir: core.config.pxeDir, log });
  if (!opts.files) await files.loadAll();
  const macs = opts.macs ?? new ClientMacLookup(core.nodes);
  const limiter = new FifoLimiter(opts.maxTransfers ?? DEFAULT_TFTP_MAX_TRANSFERS, opts.maxQueue ?? DEFAULT_TFTP_MAX_QUEUE);
  const served = new Set<string>(BOOT_FILES);
  const c: Omit<TftpCounters, 'active' | 'queued'> = {
    requests: 0,
    completed: 0,
    failed: 0,
    sizeProbes: 0,
    refused: 0,
    malformed: 0,
    duplicates: 0,
    busy: 0,
    abandoned: 0,
    stray: 0,
    bytesSent: 0,
  };
  /**
   * Requests accepted but not started yet, by client address:port: a retransmitted RRQ of a
   * waiting request is dropped (not queued twice) and marks its client as still there.
   */
  const waiting = new Map<string, { since: number; lastSeen: number }>();
  const live = new Set<TftpTransfer<RequestContext>>();
  let refusalWindow = { second: 0, count: 0 };

  const refuse = (peer: Peer, code: TftpErrorCode, message: string, why: Record<string, unknown>): PacketVerdict<RequestContext> => {
    c.refused++;
    noisy.warn(`refused:${peer.address}`, { peer: peer.address, code, why: message, ...why }, 'request refused');
    const second = Math.floor(now() / 1000);
    if (refusalWindow.second !== second) refusalWindow = { second, count: 0 };
    if (++refusalWindow.count > REFUSALS_PER_SECOND) return { action: 'drop' };
    return { action: 'reply', packet: encodeError(code, message) };
  };

  const onPacket = (packet: Buffer, peer: Peer): PacketVerdict<RequestContext> => {
    const op = opcodeOf(packet);
    if (op !== TftpOpcode.RRQ && op !== TftpOpcode.WRQ) {
      c.malformed++;
      noisy.debug(
        `malformed:${peer.address}`,
        { peer: peer.address, bytes: packet.length, opcode: op },
        'not a request on the TFTP port; dropped',
      );
      return { action: 'drop' };
    }
    let req;
    try {
      req = decodeRequest(packet);
    } catch (err) {
      if (!(err instanceof TftpDecodeError)) throw err;
      c.malformed++;
      // A request we cannot read still gets an answer, so the client stops instead of retrying.
      return refuse(peer, TftpErrorCode.ILLEGAL_OPERATION, `malformed request: ${err.field}`, { err: err.message });
    }
    c.requests++;
    const decision = decideRequest(req, served);
    if (decision.kind === 'refuse') return refuse(peer, decision.code, decision.message, { file: printable(req.filename), kind: req.kind });
    const name = decision.name as BootFileName;
    if (!files.peek(name)) {
      void files.get(name); // it may have appeared since the last check: the client's retry will find it
      const hint = (PXE_FILES as readonly string[]).includes(name) ? 'run make pxe' : 'run make image';
      return refuse(peer, TftpErrorCode.FILE_NOT_FOUND, `${name} is missing on the dispatcher (${hint})`, { file: name });
    }
    const key = `${peer.address}:${peer.port}`;
    const w = waiting.get(key);
    if (w) {
      c.duplicates++;
      w.lastSeen = now();
      return { action: 'drop' };
    }
    if (waiting.size >= WAITING_SWEEP_SIZE) for (const [k, v] of waiting) if (now() - v.lastSeen > 60_000) waiting.delete(k);
    waiting.set(key, { since: now(), lastSeen: now() });
    const request = encodeRequest({ kind: 'read', filename: name, mode: 'octet', options: stringOptions(decision.options) });
    return { action: 'accept', request, context: { name, key, receivedAt: now(), ignoredOptions: decision.ignored } };
  };

  const onTransfer = (t: TftpTransfer<RequestContext>) => {
    live.add(t);
    const { name, key, receivedAt } = t.context;
    let startedAt: number | undefined;
    let release: (() => void) | undefined;
    let size = 0;
    const mine = waiting.get(key);
    t.onEnd((outcome) => {
      live.delete(t);
      if (mine && waiting.get(key) === mine) waiting.delete(key);
      release?.();
      if (startedAt === undefined) return; // refused while queued: already counted
      account(t, outcome, size, now() - startedAt, startedAt - receivedAt);
    });
    const submitted = limiter.submit((rel) => {
      release = rel;
      if (mine && waiting.get(key) === mine) waiting.delete(key);
      if (mine && now() - mine.lastSeen > TFTP_CLIENT_GAVE_UP_MS) {
        c.abandoned++;
        t.abort('request expired in the queue');
        return;
      }
      startedAt = now();
      files.get(name).then(
        (file) => {
          if (!file) return t.abort(`${name} is missing on the dispatcher`);
          size = file.size;
          t.send(file.bytes);
        },
        (err: unknown) => t.abort(`cannot read ${name}: ${(err as Error).message}`),
      );
    });
    if (!submitted) {
      c.busy++;
      noisy.warn('busy', { peer: t.peer.address, file: name, queued: limiter.queued }, 'TFTP queue full; client told to retry');
      t.abort('server busy, try again');
    }
  };

  const account = (t: TftpTransfer<RequestContext>, outcome: TransferOutcome, size: number, durationMs: number, queuedMs: number) => {
    const ip = t.peer.address;
    const mac = macs.macOf(ip);
    const base = { file: t.context.name, ip, blksize: t.blksize, windowsize: t.windowsize };
    switch (outcome.kind) {
      case 'done': {
        c.completed++;
        c.bytesSent += size;
        log.info({ ...base, mac, bytes: size, durationMs, queuedMs }, 'file sent');
        if (mac) recordStage(core.timeline, log, mac, 'tftp.sent', { ...base, bytes: size, durationMs });
        return;
      }
      case 'client-error': {
        if (outcome.beforeData) {
          // EDK2/UEFI PXE asks for tsize, reads the OACK, then ends with ERROR 8 and
          // downloads in a second request (RFC 2347 §5 lets a client refuse the OACK).
          c.sizeProbes++;
          log.debug({ ...base, mac, size, code: outcome.code }, 'size probe');
          return;
        }
        c.failed++;
        const reason = `client error ${outcome.code}: ${outcome.message}`;
        log.warn({ ...base, mac, bytes: t.ackedBytes(), size, durationMs, reason }, 'transfer aborted by the client');
        if (mac)
          recordStage(core.timeline, log, mac, 'tftp.failed', { ...base, bytes: Math.min(size, t.ackedBytes()), size, durationMs, reason });
        return;
      }
      case 'failed': {
        c.failed++;
        log.warn({ ...base, mac, bytes: Math.min(size, t.ackedBytes()), size, durationMs, reason: outcome.message }, 'transfer failed');
        if (mac)
          recordStage(core.timeline, log, mac, 'tftp.failed', {
            ...base,
            bytes: Math.min(size, t.ackedBytes()),
            size,
            durationMs,
            reason: outcome.message,
          });
        return;
      }
    }
  };

  const base = {
    port: opts.port ?? core.config.tftpPort,
    maxBlksize: opts.maxBlksize ?? DEFAULT_TFTP_MAX_BLKSIZE,
    maxWindowsize: opts.maxWindowsize ?? DEFAULT_TFTP_MAX_WINDOWSIZE,
    timeoutMs: opts.timeoutMs ?? DEFAULT_TFTP_TIMEOUT_MS,
    retries: opts.retries ?? DEFAULT_TFTP_RETRIES,
    onPacket,
    onTransfer,
    onStrayPacket(peer: Peer, bytes: number, why: string) {
      c.stray++;
      noisy.debug(`stray:${peer.address}`, { peer: peer.address, port: peer.port, bytes, why }, 'packet dropped on a transfer socket');
    },
    onError(err: Error) {
      log.error({ err: err.message }, 'TFTP socket error');
    },
  };
  const ifindex = core.network.ifindex;
  const host = opts.host ?? '0.0.0.0';
  let server: NodeTftpServer;
  try {
    server = await startNodeTftp<RequestContext>({ ...base, host, ...(ifindex !== undefined && host === '0.0.0.0' ? { ifindex } : {}) });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES')
      throw new DispatcherError(
        'DSP_ERR_CONFIG',
        `cannot listen on TFTP port ${base.port}: ${code === 'EADDRINUSE' ? 'already in use' : 'permission denied'}`,
        {
          cause: err,
          hint:
            code === 'EADDRINUSE'
              ? 'another TFTP server (dnsmasq, tftpd-hpa) may hold it: stop it, pass --tftp-port, or --no-tftp to let it serve'
              : 'ports below 1024 need root or CAP_NET_BIND_SERVICE (the systemd unit grants it); or pass --tftp-port',
        },
      );
    if (ifindex === undefined) throw err;
    // SO_BINDTOIFINDEX refused (old kernel, no privilege): the interface's address is the next best fence.
    log.warn(
      { err: (err as Error).message, address: core.network.address },
      'cannot bind the TFTP socket to the interface; listening on its address instead',
    );
    server = await startNodeTftp<RequestContext>({ ...base, host: core.network.address });
  }
  log.info({ port: server.port, interface: core.network.name ?? null, host, maxTransfers: limiter.max }, 'TFTP listening');

  return {
    port: server.port,
    counters: () => ({ ...c, active: limiter.active, queued: limiter.queued }),
    async stop() {
      await server.close();
      for (const t of live) t.abort('server shutting down');
      const deadline = Date.now() + 2000;
      while (live.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    },
  };
}

function stringOptions(o: { blksize?: number; windowsize?: number; tsize?: 0 }): Record<string, string> {
  const out: Record<string, string> = {};
  if (o.blksize !== undefined) out.blksize = String(o.blksize);
  if (o.windowsize !== undefined) out.windowsize = String(o.windowsize);
  if (o.tsize !== undefined) out.tsize = '0';
  return out;
}
