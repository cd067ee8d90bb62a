/**
 * setsockopt(2) on Node's UDP sockets, through the `sockopt` package: Node has no API for
 * SO_BINDTOIFINDEX (answer on one interface only) or SO_RCVBUFFORCE. The package reads the
 * socket's fd from `socket._handle`, which Node flags as deprecated (DEP0112) with a warning
 * on the console at every start; that one known access is done with deprecation warnings
 * muted, so operators see only warnings that ask something of them.
 */
import { createRequire } from 'node:module';
import type { Socket } from 'node:dgram';

/** SOL_SOCKET and the options we set (Linux, asm-generic/socket.h). */
export const SOL_SOCKET = 1;
export const SO_RCVBUFFORCE = 33;
/** Linux ≥ 5.0. */
export const SO_BINDTOIFINDEX = 62;

type SetSockOpt = (socket: unknown, level: number, name: number, value: number) => void;
let setsockopt: SetSockOpt | undefined;

/** Sets an integer socket option on a bound UDP socket; throws what the kernel said. */
export function setSocketOption(socket: Socket, level: number, name: number, value: number): void {
  setsockopt ??= (createRequire(import.meta.url)('sockopt') as { setsockopt: SetSockOpt }).setsockopt;
  const muted = process.noDeprecation;
  process.noDeprecation = true;
  try {
    setsockopt(socket, level, name, value);
  } finally {
    process.noDeprecation = muted;
  }
}

/** Restricts a bound UDP socket to one interface (what SO_BINDTODEVICE does, by index). */
export function bindToIfindex(socket: Socket, ifindex: number): void {
  setSocketOption(socket, SOL_SOCKET, SO_BINDTOIFINDEX, ifindex);
}
