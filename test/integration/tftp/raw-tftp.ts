/**
 * A minimal TFTP reader on a raw UDP socket, for what real clients cannot be made to do:
 * the EDK2 size probe, hostile packets mid-transfer, a request with a NUL in its name.
 */
import { createSocket, type Socket } from 'node:dgram';
import { decodeError, encodeRequest, TftpOpcode } from '../../../dispatcher/src/tftp/codec.js';

export interface Reply {
  packet: Buffer;
  port: number;
}

export class RawTftp {
  readonly sock: Socket;
  #queue: Reply[] = [];
  #waiter: ((r: Reply) => void) | undefined;

  private constructor(sock: Socket) {
    this.sock = sock;
    sock.on('message', (packet, rinfo) => {
      const r = { packet, port: rinfo.port };
      if (this.#waiter) {
        const w = this.#waiter;
        this.#waiter = undefined;
        w(r);
      } else this.#queue.push(r);
    });
  }

  static async open(): Promise<RawTftp> {
    const sock = createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
    return new RawTftp(sock);
  }

  send(packet: Buffer, port: number): void {
    this.sock.send(packet, port, '127.0.0.1');
  }

  /** Next packet, or undefined after `ms`. */
  next(ms = 3000): Promise<Reply | undefined> {
    const q = this.#queue.shift();
    if (q) return Promise.resolve(q);
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.#waiter = undefined;
        resolve(undefined);
      }, ms);
      this.#waiter = (r) => {
        clearTimeout(t);
        resolve(r);
      };
    });
  }

  /** RRQ with options; returns the OACK's options and the transfer port. */
  async request(
    port: number,
    filename: string,
    options: Record<string, string>,
  ): Promise<{ oack: Record<string, string>; tid: number } | { error: { code: number; message: string } }> {
    this.send(encodeRequest({ kind: 'read', filename, mode: 'octet', options }), port);
    const r = await this.next();
    if (!r) throw new Error('no answer to RRQ');
    const err = decodeError(r.packet);
    if (err) return { error: err };
    if (r.packet.readUInt16BE(0) !== TftpOpcode.OACK) throw new Error(`expected OACK, got opcode ${r.packet.readUInt16BE(0)}`);
    const parts = r.packet.subarray(2).toString('latin1').split('\0');
    const oack: Record<string, string> = {};
    for (let i = 0; i + 1 < parts.length; i += 2) oack[parts[i]!] = parts[i + 1]!;
    return { oack, tid: r.port };
  }

  /** After an OACK: ACK 0 and read every block (window 1), returning the bytes; a hook returning false stops. */
  async readAll(tid: number, blksize: number, hook?: (block: number) => boolean | void): Promise<Buffer> {
    const chunks: Buffer[] = [];
    this.send(ack(0), tid);
    let expected = 1;
    for (;;) {
      const r = await this.next();
      if (!r) throw new Error(`timeout waiting for block ${expected}`);
      const op = r.packet.readUInt16BE(0);
      if (op === TftpOpcode.ERROR) throw new Error(`server error ${decodeError(r.packet)?.code}: ${decodeError(r.packet)?.message}`);
      if (op !== TftpOpcode.DATA) continue;
      const block = r.packet.readUInt16BE(2);
      if (block !== (expected & 0xffff)) continue;
      const data = r.packet.subarray(4);
      chunks.push(Buffer.from(data));
      if (hook?.(expected) === false) return Buffer.concat(chunks); // the hook ended the transfer
      this.send(ack(block), tid);
      expected++;
      if (data.length < blksize) return Buffer.concat(chunks);
    }
  }

  close(): void {
    this.sock.close();
  }
}

export function ack(block: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt16BE(TftpOpcode.ACK, 0);
  b.writeUInt16BE(block, 2);
  return b;
}

export function errorPacket(code: number, message: string): Buffer {
  return Buffer.concat([Buffer.from([0, TftpOpcode.ERROR, code >> 8, code & 255]), Buffer.from(message, 'latin1'), Buffer.from([0])]);
}
