/**
 * Zero-copy image downloads through the native addon (dispatcher/native/sendfile.c, built by
 * `make build` into dist/native/sendfile.node). Node has no sendfile(2): written from JS, each
 * byte of a 38 MB initrd is copied into every client's socket, which is what made a 50-client
 * storm slower than nginx. With the addon, a download is: the HTTP head through Node, then
 * the body by sendfile from a sealed memfd on the addon's own sender thread, then `res.end()`
 * (keep-alive goes on: the client's next request is read as usual).
 *
 * When the addon is missing (not built, no Node headers, another platform) or LC_SENDFILE=0,
 * `loadSendfile` says why and the caller keeps the JS write path.
 */
import { loadAddon } from '../../../../node-agent/src/native-addon.js';
import type { Socket } from 'node:net';
import type { ServerResponse } from 'node:http';

/** The addon's surface (see sendfile.c). */
interface Addon {
  memfd(name: string, bytes: Buffer): object;
  /** cb(errno, bytesSent) once, on this thread; errno 0 = every byte is in the kernel. */
  start(
    fd: number,
    image: object,
    offset: number,
    length: number,
    idleTimeoutMs: number,
    cb: (errno: number, sent: number) => void,
  ): object;
  abort(transfer: object): void;
}

/**
 * A download that makes no progress this long is abandoned (the client vanished without a
 * reset; TCP would keep retrying for many minutes). Override per server with the option.
 */
export const SENDFILE_IDLE_TIMEOUT_MS = 30_000;
/** Bodies smaller than this are written by Node in one go: no gain in a second thread. */
export const SENDFILE_MIN_BYTES = 64 * 1024;

const ERRNO_NAMES: Record<number, string> = { 32: 'EPIPE', 104: 'ECONNRESET', 110: 'ETIMEDOUT', 125: 'ECANCELED' };

/** How a zero-copy body ended. */
export interface SendfileOutcome {
  ok: boolean;
  sentBytes: number;
  /** errno name when not ok (EPIPE, ECONNRESET, ETIMEDOUT: client idle, ECANCELED: socket closed here). */
  error?: string;
}

export class ZeroCopySender {
  /** One sealed memfd per loaded file version (keyed by its Buffer: a reload is a new Buffer). */
  readonly #images = new WeakMap<Buffer, object>();

  constructor(
    private readonly addon: Addon,
    readonly idleTimeoutMs = SENDFILE_IDLE_TIMEOUT_MS,
  ) {}

  /**
   * Whether this response's body can go by sendfile: a plain TCP socket that is the
   * response's own (not a pipelined response still waiting for the socket) and has a fd.
   */
  usable(res: ServerResponse): boolean {
    const socket = res.socket as (Socket & { _httpMessage?: unknown; _handle?: { fd?: number }; encrypted?: boolean }) | null;
    return (
      !!socket &&
      !socket.destroyed &&
      !socket.encrypted &&
      socket._httpMessage === res &&
      typeof socket._handle?.fd === 'number' &&
      socket._handle.fd >= 0
    );
  }

  /**
   * Seals `bytes` into their memfd now (a copy of the whole file, tens of ms for an initrd),
   * so the first download of a storm does not pay for it on the event loop.
   */
  prepare(bytes: Buffer): void {
    this.#imageOf(bytes);
  }

  /**
   * Sends the head (already set with writeHead) and `bytes[start, start+length)` as the body,
   * then ends the response. On failure the socket is destroyed (the response emits 'close').
   * Call only when `usable(res)`.
   */
  send(res: ServerResponse, bytes: Buffer, start: number, length: number): Promise<SendfileOutcome> {
    const socket = res.socket as Socket & { _handle: StreamHandle };
    const image = this.#imageOf(bytes);
    return new Promise<SendfileOutcome>((resolve) => {
      res.flushHeaders();
      // The head must be in the kernel before the body goes around Node: an empty write's
      // callback runs once every earlier write on this socket has completed.
      socket.write(EMPTY, (err) => {
        if (err || socket.destroyed)
          return resolve({ ok: false, sentBytes: 0, error: err ? ((err as NodeJS.ErrnoException).code ?? 'write') : 'ECANCELED' });
        this.#body(res, socket, image, start, length, resolve);
      });
    });
  }

  #body(
    res: ServerResponse,
    socket: Socket & { _handle: StreamHandle },
    image: object,
    start: number,
    length: number,
    resolve: (o: SendfileOutcome) => void,
  ): void {
    const handle = socket._handle;
    // Node reads nothing while the body is out of its hands: a pipelined request or a
    // half-close (FIN) is seen once the response is over, as on the JS path.
    const wasReading = handle.reading === true;
    if (wasReading) {
      handle.reading = false;
      handle.readStop();
    }
    let transfer: object | undefined;
    const onClose = () => {
      if (transfer) this.addon.abort(transfer);
    };
    try {
      transfer = this.addon.start(handle.fd, image, start, length, this.idleTimeoutMs, (errno, sent) => {
        transfer = undefined;
        socket.off('close', onClose);
        if (errno === 0 && !socket.destroyed) {
          if (wasReading) {
            handle.reading = true;
            handle.readStart();
          }
          res.end();
          return resolve({ ok: true, sentBytes: sent });
        }
        // A reset, not a close: what is still queued for a client that stopped reading would
        // otherwise hold kernel memory until TCP gives up on it, many minutes later.
        if (!socket.destroyed) socket.resetAndDestroy();
        resolve({ ok: false, sentBytes: sent, error: ERRNO_NAMES[errno] ?? `errno ${errno}` });
      });
    } catch (err) {
      socket.destroy();
      return resolve({ ok: false, sentBytes: 0, error: (err as Error).message });
    }
    socket.once('close', onClose);
  }

  #imageOf(bytes: Buffer): object {
    let image = this.#images.get(bytes);
    if (!image) {
      image = this.addon.memfd('lc-boot-file', bytes);
      this.#images.set(bytes, image);
    }
    return image;
  }
}

interface StreamHandle {
  fd: number;
  reading?: boolean;
  readStop(): number;
  readStart(): number;
}

const EMPTY = Buffer.alloc(0);

export type SendfileLoad = { sender: ZeroCopySender; path: string } | { sender: undefined; reason: string };

/** The addon, if it can be used here (where it is looked for: node-agent/src/native-addon.ts). */
export function loadSendfile(opts: { idleTimeoutMs?: number; env?: NodeJS.ProcessEnv; paths?: string[] } = {}): SendfileLoad {
  const { idleTimeoutMs, ...where } = opts;
  const loaded = loadAddon<Addon>(
    'sendfile',
    (m) => typeof m.start === 'function' && typeof m.memfd === 'function' && typeof m.abort === 'function',
    where,
  );
  return loaded.addon
    ? { sender: new ZeroCopySender(loaded.addon, idleTimeoutMs), path: loaded.path }
    : { sender: undefined, reason: loaded.reason };
}
