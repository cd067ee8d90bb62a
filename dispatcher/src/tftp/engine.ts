/**
 * The TFTP transfer engine (read requests only): the same contract as node-tftp.ts
 * (`NodeTftpOptions` in, `TftpTransfer`s out; server.ts keeps every decision), written for a
 * boot storm. node-tftp streams each file through Readable/Writable machinery, a timer per
 * packet and a copied DATA buffer per block; here an ACK costs a 4-byte header and one
 * sendmsg of [header, slice of the file] on the transfer's own connected socket.
 *
 * - RFC 1350: lock-step DATA/ACK, a final block shorter than blksize (empty when the size is
 *   a multiple of it); duplicate ACKs never trigger a resend (RFC 1123 §4.2.3.1, the
 *   "Sorcerer's Apprentice"): only the retransmission timer does.
 * - RFC 2347/2348/2349: the OACK carries exactly the options granted (blksize capped at
 *   maxBlksize, tsize = the file's size); the client's ACK 0 starts the data. An ERROR
 *   before that ACK (EDK2 asks tsize, then ERROR 8) ends the transfer as a size probe.
 * - RFC 7440: windowsize W blocks are sent before waiting; an ACK of block n (the window's
 *   last, or an earlier one after a loss) moves the window to n+1.
 * - Block numbers roll over from 65535 to 0 (what iPXE, tftp-hpa and EDK2 expect for files
 *   beyond 65535 blocks).
 * - The transfer socket is connected to the client's address and port (its TID, RFC 1350
 *   §4): the kernel drops everyone else's packets. An ICMP error on it (a client's
 *   neighbour entry in flux during a storm) is not fatal: the timer retransmits.
 */
import { createSocket, type Socket } from 'node:dgram';
import { TftpOpcode, decodeError, decodeRequest, encodeError, TftpErrorCode } from './codec.js';
import { bindToIfindex } from '../net/socket-options.js';
import { type NodeTftpOptions, type NodeTftpServer, type Peer, type TftpTransfer, type TransferOutcome } from './node-tftp.js';

export async function startTftpEngine<C>(opts: NodeTftpOptions<C>): Promise<NodeTftpServer> {
  const sock = createSocket({ type: 'udp4' });
  sock.on('error', (err) => opts.onError(err));
  sock.on('message', (msg, rinfo) => {
    const peer = { address: rinfo.address, port: rinfo.port };
    let verdict;
    try {
      verdict = opts.onPacket(msg, peer);
    } catch (err) {
      opts.onError(err as Error);
      return;
    }
    if (verdict.action === 'reply') sock.send(verdict.packet, rinfo.port, rinfo.address);
    else if (verdict.action === 'accept') {
      const t = new Transfer<C>(peer, verdict.context, verdict.request, opts);
      opts.onTransfer(t);
    }
  });
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(opts.port, opts.host, () => {
      sock.off('error', reject);
      resolve();
    });
  });
  if (opts.ifindex !== undefined) {
    try {
      bindToIfindex(sock, opts.ifindex);
    } catch (err) {
      sock.close();
      throw err;
    }
  }
  return {
    port: sock.address().port,
    close: () => new Promise<void>((resolve) => sock.close(() => resolve())),
  };
}

/** Options a request may carry (already negotiated by server.ts: tree.ts `negotiate`). */
interface Granted {
  blksize: number;
  windowsize: number;
  /** Which options go in the OACK; none → RFC 1350 plain transfer, no OACK. */
  echo: { blksize: boolean; windowsize: boolean; tsize: boolean };
}

function grant(request: Buffer, maxBlksize: number, maxWindowsize: number): Granted {
  const o = decodeRequest(request).options;
  const blk = Number(o.blksize);
  const win = Number(o.windowsize);
  return {
    blksize: o.blksize !== undefined && blk >= 8 ? Math.min(blk, maxBlksize) : 512,
    windowsize: o.windowsize !== undefined && win >= 1 ? Math.min(win, maxWindowsize) : 1,
    echo: { blksize: o.blksize !== undefined && blk >= 8, windowsize: o.windowsize !== undefined && win >= 1, tsize: o.tsize !== undefined },
  };
}

type State = 'connecting' | 'ready' | 'oack' | 'data' | 'ended';

class Transfer<C> implements TftpTransfer<C> {
  readonly blksize: number;
  readonly windowsize: number;
  readonly #echo: Granted['echo'];
  readonly #sock: Socket;
  readonly #opts: NodeTftpOptions<C>;
  #state: State = 'connecting';
  #bytes: Buffer | undefined;
  /** Number of DATA blocks (the last one shorter than blksize, maybe empty). */
  #blocks = 0;
  /** First block not yet acknowledged, and the next one to send (absolute, from 1). */
  #base = 1;
  #next = 1;
  #acks = 0;
  #acked = 0;
  #tries = 0;
  #timer: NodeJS.Timeout | undefined;
  #endCb: ((o: TransferOutcome) => void) | undefined;
  #outcome: TransferOutcome | undefined;
  #pendingError: string | undefined;

  constructor(
    readonly peer: Peer,
    readonly context: C,
    request: Buffer,
    opts: NodeTftpOptions<C>,
  ) {
    const g = grant(request, opts.maxBlksize, opts.maxWindowsize);
    this.blksize = g.blksize;
    this.windowsize = g.windowsize;
    this.#echo = g.echo;
    this.#opts = opts;
    this.#sock = createSocket({ type: 'udp4' });
    this.#sock.on('error', (err) => {
      // Before the connect: this transfer cannot start. After it: an ICMP error on the
      // connected socket, and the retransmission timer decides.
      if (this.#state === 'connecting') this.#end({ kind: 'failed', message: err.message });
    });
    this.#sock.on('message', (msg) => this.#onPacket(msg));
    this.#sock.bind(0, opts.host === '0.0.0.0' ? undefined : opts.host, () => {
      if (opts.ifindex !== undefined) {
        try {
          bindToIfindex(this.#sock, opts.ifindex);
        } catch {
          /* the listening socket already is; only this reply port is wider */
        }
      }
      this.#sock.connect(peer.port, peer.address, () => {
        if (this.#state === 'ended') return;
        const wasReady = this.#bytes !== undefined;
        this.#state = 'ready';
        if (this.#pendingError !== undefined) return this.#fail(this.#pendingError, true);
        if (wasReady) this.#start();
      });
    });
  }

  ackedBytes(): number {
    return Math.max(0, this.#acked * this.blksize);
  }

  send(bytes: Buffer): void {
    if (this.#state === 'ended' || this.#bytes) return;
    this.#bytes = bytes;
    this.#blocks = Math.floor(bytes.length / this.blksize) + 1;
    if (this.#state === 'ready') this.#start();
  }

  abort(message: string): void {
    if (this.#state === 'ended') return;
    if (this.#state === 'connecting') {
      this.#pendingError = message; // said once the socket is connected
      return;
    }
    this.#fail(message, true);
  }

  onEnd(cb: (o: TransferOutcome) => void): void {
    this.#endCb = cb;
    if (this.#outcome) cb(this.#outcome);
  }

  #start(): void {
    this.#timer = setTimeout(() => this.#onTimeout(), this.#opts.timeoutMs);
    const e = this.#echo;
    if (e.blksize || e.windowsize || e.tsize) {
      this.#state = 'oack';
      this.#sendOack();
    } else {
      this.#state = 'data';
      this.#sendWindow();
    }
  }

  #sendOack(): void {
    const parts: string[] = [];
    if (this.#echo.blksize) parts.push('blksize', String(this.blksize));
    if (this.#echo.windowsize) parts.push('windowsize', String(this.windowsize));
    if (this.#echo.tsize) parts.push('tsize', String(this.#bytes!.length));
    const body = Buffer.from(parts.join('\0') + '\0', 'latin1');
    const head = Buffer.from([0, TftpOpcode.OACK]);
    this.#sock.send([head, body]);
  }

  /** Sends blocks from #base up to the window's end (resending what was sent before). */
  #sendWindow(): void {
    const bytes = this.#bytes!;
    const end = Math.min(this.#base + this.windowsize, this.#blocks + 1);
    for (let b = this.#base; b < end; b++) {
      const off = (b - 1) * this.blksize;
      const head = Buffer.allocUnsafe(4);
      head.writeUInt16BE(TftpOpcode.DATA, 0);
      head.writeUInt16BE(b & 0xffff, 2);
      this.#sock.send([head, bytes.subarray(off, Math.min(off + this.blksize, bytes.length))]);
    }
    this.#next = end;
  }

  #onPacket(msg: Buffer): void {
    if (this.#state === 'ended') return;
    if (msg.length < 4) return this.#opts.onStrayPacket(this.peer, msg.length, 'runt packet');
    const op = msg.readUInt16BE(0);
    if (op === TftpOpcode.ERROR) {
      const e = decodeError(msg) ?? { code: 0, message: '' };
      return this.#end({ kind: 'client-error', code: e.code, message: e.message, beforeData: this.#acks === 0 });
    }
    if (op !== TftpOpcode.ACK) return;
    const block = msg.readUInt16BE(2);
    if (this.#state === 'oack') {
      if (block !== 0) return;
      this.#acks++;
      this.#state = 'data';
      this.#tries = 0;
      this.#timer?.refresh();
      return this.#sendWindow();
    }
    if (this.#state !== 'data') return;
    // The absolute block this ACK names: the latest sent block with these 16 bits.
    const lastSent = this.#next - 1;
    const abs = lastSent - ((lastSent - block) & 0xffff);
    if (abs < this.#base) return; // a duplicate or stale ACK: never a reason to resend
    this.#acks++;
    this.#acked = abs;
    this.#tries = 0;
    this.#timer?.refresh();
    if (abs >= this.#blocks) return this.#end({ kind: 'done' });
    // Lock-step, or the end of a window: the next window. Earlier in a window (RFC 7440 §4:
    // the client saw a gap): the window again from there.
    this.#base = abs + 1;
    this.#sendWindow();
  }

  #onTimeout(): void {
    if (this.#state === 'ended') return;
    if (++this.#tries > this.#opts.retries) return this.#fail('Timed out', false);
    if (this.#state === 'oack') this.#sendOack();
    else if (this.#state === 'data') this.#sendWindow();
    this.#timer?.refresh();
  }

  #fail(message: string, tellClient: boolean): void {
    if (tellClient) this.#sock.send(encodeError(TftpErrorCode.NOT_DEFINED, message));
    this.#end({ kind: 'failed', message });
  }

  #end(outcome: TransferOutcome): void {
    if (this.#state === 'ended') return;
    this.#state = 'ended';
    if (this.#timer) clearTimeout(this.#timer);
    this.#outcome = outcome;
    // close after the last send has left (ERROR, or nothing)
    setImmediate(() => this.#sock.close());
    this.#endCb?.(outcome);
  }
}
