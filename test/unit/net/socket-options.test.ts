/**
 * Socket options through the `sockopt` package, on a real UDP socket (as root, like the
 * dispatcher): the option takes effect, and Node's DEP0112 warning about `_handle` is not
 * printed.
 */
import { describe, expect, it } from 'vitest';
import { createSocket } from 'node:dgram';
import { createRequire } from 'node:module';
import {
  bindToIfindex,
  setSocketOption,
  SOL_SOCKET,
  SO_BINDTOIFINDEX,
  SO_RCVBUFFORCE,
} from '../../../dispatcher/src/net/socket-options.js';

const { getsockopt } = createRequire(import.meta.url)('sockopt') as { getsockopt(s: unknown, level: number, name: number): number };

describe('socket options', () => {
  it('binds a UDP socket to an interface and forces its receive buffer, without a deprecation warning', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error & { code?: string }) => warnings.push(`${w.code ?? w.name}: ${w.message}`);
    process.on('warning', onWarning);
    const socket = createSocket('udp4');
    const noDeprecation = process.noDeprecation;
    try {
      await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
      bindToIfindex(socket, 1); // lo
      setSocketOption(socket, SOL_SOCKET, SO_RCVBUFFORCE, 1 << 20);
      await new Promise((r) => setImmediate(r)); // warnings are emitted on the next tick
      expect(warnings).toEqual([]);
      process.noDeprecation = true; // our own reads below go through _handle too
      expect(getsockopt(socket, SOL_SOCKET, SO_BINDTOIFINDEX)).toBe(1);
      expect(socket.getRecvBufferSize()).toBe(2 << 20); // the kernel doubles what it is given
    } finally {
      process.noDeprecation = noDeprecation;
      process.off('warning', onWarning);
      socket.close();
    }
  });

  it('throws what the kernel says for an option it refuses', async () => {
    const socket = createSocket('udp4');
    try {
      await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
      expect(() => setSocketOption(socket, SOL_SOCKET, 999, 1)).toThrow(/setsockopt failed: Protocol not available/);
    } finally {
      socket.close();
    }
  });
});
