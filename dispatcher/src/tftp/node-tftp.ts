/**
 * The one file that touches the `tftp` package (node-tftp 0.1.2). It runs the transfer
 * machinery (OACK, blksize, windowsize, retransmission; RFC 2347/2348/2349/7440) and we
 * keep the decisions. What this adapter adds around it:
 *
 * - Every packet on port 69 goes through `onPacket` first; node-tftp only ever sees a request
 *   we re-encoded (a tree name, mode octet, options it understands), never a hostile name.
 * - The transfer socket of each request is guarded: only the client's address and port
 *   (its TID, RFC 1350 §4) get through, and runt packets are dropped (node-tftp reads an
 *   opcode from any packet and would throw on a 0- or 1-byte datagram).
 * - ACKs and client ERRORs are observed, to tell a completed transfer from an aborted one
 *   and an EDK2 size probe (RRQ with tsize, then ERROR 8 after the OACK) from a failure;
 *   duplicate ACKs are dropped (node-tftp would resend on each: RFC 1123 §4.2.3.1).
 * - Transfer sockets stay unconnected (as in classic servers): a connected UDP socket turns
 *   a transient ICMP port-unreachable (a client's neighbour entry in flux during a storm of
 *   300) into a failed transfer, where an unconnected one just retransmits.
 * - SO_BINDTOIFINDEX on the listening socket (and on each transfer socket) when an
 *   interface is given: node-tftp creates its sockets with dgram and exposes the listening
 *   one as `server._socket`, so the option can be set right after bind.
 */
import { createRequire } from 'node:module';
import type { Socket as DgramSocket, RemoteInfo } from 'node:dgram';
import { TftpOpcode, ackBlockOf, decodeError, opcodeOf } from './codec.js';
import { bindToIfindex } from '../net/socket-options.js';

const require = createRequire(import.meta.url);

export interface Peer {
  address: string;
  port: number;
}

export type PacketVerdict<C> =
  | { action: 'drop' }
  /** Answer from the listening socket (a refusal) and forget the packet. */
  | { action: 'reply'; packet: Buffer }
  /** Hand `request` (an encoded RRQ) to node-tftp; `context` comes back with the transfer. */
  | { action: 'accept'; request: Buffer; context: C };

export type TransferOutcome =
  | { kind: 'done' }
  /** The client sent an ERROR. `beforeData`: it never acknowledged the OACK (a size probe). */
  | { kind: 'client-error'; code: number; message: string; beforeData: boolean }
  /** Timed out, socket error, or aborted by us. */
  | { kind: 'failed'; message: string };

export interface TftpTransfer<C> {
  peer: Peer;
  context: C;
  /** Negotiated block and window sizes (512 and 1 without options). */
  blksize: number;
  windowsize: number;
  /** Bytes the client has acknowledged so far (approximate for windows beyond 65535 blocks). */
  ackedBytes(): number;
  /** Sends the whole file: announces its size (tsize in the OACK) and streams it. */
  send(bytes: Buffer): void;
  /** Ends the transfer with an ERROR packet to the client (code 0 with our message). */
  abort(message: string): void;
  /** Called once, when the transfer ends in any way. */
  onEnd(cb: (outcome: TransferOutcome) => void): void;
}

export interface NodeTftpOptions<C> {
  host: string;
  port: number;
  /** Largest blksize granted (RFC 2348); a client asking more gets this. */
  maxBlksize: number;
  /** Largest windowsize granted (RFC 7440). */
  maxWindowsize: number;
  /** Retransmission timeout and count for DATA/OACK. */
  timeoutMs: number;
  retries: number;
  /** Restrict the sockets to this interface (SO_BINDTOIFINDEX). */
  ifindex?: number;
  onPacket(packet: Buffer, peer: Peer): PacketVerdict<C>;
  onTransfer(transfer: TftpTransfer<C>): void;
  /** A transfer socket got a packet from another address/port, or a runt packet. */
  onStrayPacket(peer: Peer, bytes: number, why: string): void;
  onError(err: Error): void;
}

export interface NodeTftpServer {
  /** The port actually bound. */
  port: number;
  /** Stops accepting requests; running transfers go on until they end. */
  close(): Promise<void>;
}

/* node-tftp's shapes, as far as we use them (the package ships no types). */
interface NtStats {
  blockSize: number;
  windowSize: number;
  remoteAddress: string;
  remotePort: number;
}
interface NtRequestSide {
  _socket: DgramSocket;
}
interface NtGetStream {
  stats: NtStats;
  on(ev: 'close' | 'abort', cb: () => void): void;
  on(ev: 'error', cb: (err: Error) => void): void;
  abort(message?: string): void;
}
interface NtPutStream {
  _writer: NtRequestSide;
  setSize(n: number): void;
  end(chunk: Buffer): void;
}
interface NtServer {
  _socket: DgramSocket;
  on(ev: 'error', cb: (err: Error) => void): void;
  close(): void;
}
interface NtModule {
  createServer(opts: Record<string, unknown>, listener: (req: NtGetStream, res: NtPutStream) => void): NtServer;
}

/**
 * node-tftp builds every DATA packet with the deprecated `new Buffer(n)`, and Node walks the
 * JS stack on each such call (to decide whether to print DEP0005) for the first 10,000 of
 * them: tens of microseconds per packet in a boot storm. Same bytes, built with allocUnsafe.
 */
function patchDataSerializer(): void {
  const data = require('tftp/lib/protocol/packets/data.js') as { serialize(block: number, data: Buffer): Buffer; __lc?: true };
  if (data.__lc) return;
  data.serialize = (block: number, chunk: Buffer): Buffer => {
    const buf = Buffer.allocUnsafe(4 + chunk.length);
    buf.writeUInt16BE(TftpOpcode.DATA, 0);
    buf.writeUInt16BE(block, 2);
    chunk.copy(buf, 4);
    return buf;
  };
  data.__lc = true;
}

export async function startNodeTftp<C>(opts: NodeTftpOptions<C>): Promise<NodeTftpServer> {
  const tftp = require('tftp') as NtModule;
  patchDataSerializer();
  const contexts = new Map<string, C[]>();
  const keyOf = (address: string, port: number) => `${address}:${port}`;

  const server = tftp.createServer(
    {
      host: opts.host,
      port: opts.port,
      root: '/nonexistent', // never used: our listener serves from memory
      denyPUT: true,
      blockSize: opts.maxBlksize,
      windowSize: opts.maxWindowsize,
      timeout: opts.timeoutMs,
      retries: opts.retries,
    },
    (req, res) => {
      const peer = { address: req.stats.remoteAddress, port: req.stats.remotePort };
      const key = keyOf(peer.address, peer.port);
      const queue = contexts.get(key);
      const context = queue?.shift();
      if (queue && queue.length === 0) contexts.delete(key);
      if (context === undefined) {
        req.on('error', () => {});
        req.abort('internal error');
        return;
      }
      opts.onTransfer(wrapTransfer(req, res, peer, context, opts));
    },
  );
  server.on('error', (err) => opts.onError(err));

  const sock = server._socket;
  // Our filter runs instead of node-tftp's own request parser (see the file comment).
  const [ntListener] = sock.listeners('message') as ((msg: Buffer, rinfo: RemoteInfo) => void)[];
  sock.removeAllListeners('message');
  sock.on('message', (msg: Buffer, rinfo: RemoteInfo) => {
    const peer = { address: rinfo.address, port: rinfo.port };
    let verdict: PacketVerdict<C>;
    try {
      verdict = opts.onPacket(msg, peer);
    } catch (err) {
      opts.onError(err as Error);
      return;
    }
    if (verdict.action === 'reply') sock.send(verdict.packet, rinfo.port, rinfo.address);
    else if (verdict.action === 'accept') {
      const key = keyOf(rinfo.address, rinfo.port);
      const list = contexts.get(key) ?? [];
      list.push(verdict.context);
      contexts.set(key, list);
      ntListener!(verdict.request, rinfo);
    }
  });

  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    sock.once('error', onError);
    sock.bind(opts.port, opts.host, () => {
      sock.off('error', onError);
      resolve();
    });
  });
  if (opts.ifindex !== undefined) {
    try {
      bindToIfindex(sock, opts.ifindex);
    } catch (err) {
      server.close();
      throw err;
    }
  }
  return {
    port: sock.address().port,
    close: () =>
      new Promise<void>((resolve) => {
        sock.once('close', () => resolve());
        server.close();
      }),
  };
}

function wrapTransfer<C>(req: NtGetStream, res: NtPutStream, peer: Peer, context: C, opts: NodeTftpOptions<C>): TftpTransfer<C> {
  const blksize = req.stats.blockSize;
  const windowsize = req.stats.windowSize;
  let acks = 0;
  let lastBlock = 0;
  let rollovers = 0;
  let clientError: { code: number; message: string; beforeData: boolean } | undefined;
  let failure: string | undefined;
  let ended = false;
  let endCb: ((o: TransferOutcome) => void) | undefined;
  let outcome: TransferOutcome | undefined;

  // Guard the transfer socket: TID check and runt packets, and watch ACK/ERROR go by.
  const tsock = res._writer._socket;
  const ntListeners = tsock.listeners('message') as ((msg: Buffer, rinfo: RemoteInfo) => void)[];
  tsock.removeAllListeners('message');
  tsock.on('message', (msg: Buffer, rinfo: RemoteInfo) => {
    if (rinfo.address !== peer.address || rinfo.port !== peer.port)
      return opts.onStrayPacket({ address: rinfo.address, port: rinfo.port }, msg.length, 'unknown transfer ID');
    if (msg.length < 4) return opts.onStrayPacket(peer, msg.length, 'runt packet');
    const block = ackBlockOf(msg);
    if (block !== undefined) {
      // RFC 1123 §4.2.3.1 (the Sorcerer's Apprentice): node-tftp answers every ACK with data, so
      // a duplicate ACK (a delayed one, or a client's retransmission) would double the traffic
      // from there on. Only a timeout may cause a resend: the duplicate goes no further.
      if (acks > 0 && block === lastBlock) return;
      if (block < lastBlock && lastBlock - block > 32768) rollovers++;
      lastBlock = block;
      acks++;
    } else if (opcodeOf(msg) === TftpOpcode.ERROR) {
      const e = decodeError(msg);
      if (e) clientError = { ...e, beforeData: acks === 0 };
    }
    for (const l of ntListeners) l(msg, rinfo);
  });
  if (opts.ifindex !== undefined) {
    try {
      bindToIfindex(tsock, opts.ifindex);
    } catch {
      /* the listening socket already is; a failure here only widens the ephemeral port */
    }
  }

  const finish = () => {
    if (ended) return;
    ended = true;
    outcome = clientError
      ? { kind: 'client-error', ...clientError }
      : failure !== undefined
        ? { kind: 'failed', message: failure }
        : { kind: 'done' };
    endCb?.(outcome);
  };
  req.on('error', (err) => {
    failure = err.message;
  });
  req.on('abort', () => {
    failure ??= 'aborted';
  });
  // node-tftp emits 'close' before 'error'/'abort': decide once those had their turn.
  req.on('close', () => setImmediate(finish));

  return {
    peer,
    context,
    blksize,
    windowsize,
    ackedBytes: () => Math.max(0, (rollovers * 65536 + lastBlock) * blksize),
    send(bytes: Buffer) {
      res.setSize(bytes.length);
      res.end(bytes);
    },
    abort(message: string) {
      failure = message;
      req.abort(message);
    },
    onEnd(cb) {
      endCb = cb;
      if (outcome) cb(outcome);
    },
  };
}
