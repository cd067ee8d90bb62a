/**
 * "No IPv6 router here" on the node network (dispatcher/native/router-advert.c). iPXE waits for
 * every configurator of its NIC, DHCP and IPv6 router discovery, before it fetches anything:
 * with no IPv6 router, 16 s of unanswered router solicitations on every boot (SeaBIOS + iPXE
 * ROM, and ipxe.efi under UEFI). One router advertisement with lifetime 0 and no prefix ends
 * that wait and configures nothing on any host (RFC 4861 §4.2, §6.3.4). Started with full-mode
 * DHCP, where the dispatcher owns the node network; LC_ROUTER_ADVERT=0 turns it off.
 */
import type { Logger } from '../log.js';
import { loadAddon } from '../../../node-agent/src/native-addon.js';

export interface RouterAdvertStats {
  solicitations: number;
  advertisements: number;
  errors: number;
  lastError: string | null;
}

interface Addon {
  start(ifindex: number): object;
  stats(handle: object): RouterAdvertStats;
  stop(handle: object): void;
}

export interface RouterAdvertiser {
  stats(): RouterAdvertStats;
  stop(): void;
}

/** Starts answering on `ifindex`; undefined (and one log line saying why) when it cannot. */
export function startRouterAdvertiser(
  ifindex: number,
  log: Logger,
  opts: { env?: NodeJS.ProcessEnv; paths?: string[] } = {},
): RouterAdvertiser | undefined {
  if ((opts.env ?? process.env).LC_ROUTER_ADVERT === '0') return undefined;
  const loaded = loadAddon<Addon>(
    'router-advert',
    (m) => typeof m.start === 'function' && typeof m.stats === 'function' && typeof m.stop === 'function',
    opts,
  );
  if (!loaded.addon) {
    log.warn({ reason: loaded.reason }, 'no IPv6 router advertisements: iPXE will wait ~16 s for a router on each boot');
    return undefined;
  }
  const addon = loaded.addon;
  let handle: object;
  try {
    handle = addon.start(ifindex);
  } catch (err) {
    log.warn({ reason: (err as Error).message }, 'no IPv6 router advertisements: iPXE will wait ~16 s for a router on each boot');
    return undefined;
  }
  log.info({ ifindex }, 'answering IPv6 router solicitations with "no router" (lifetime 0), so iPXE does not wait for one');
  let stopped = false;
  return {
    stats: () => addon.stats(handle),
    stop: () => {
      if (stopped) return;
      stopped = true;
      addon.stop(handle);
    },
  };
}
