/**
 * What the full- and proxy-mode handlers share: the services they call (node registry, boot
 * timeline), counters, and the first step of every request — who is asking, and may it boot.
 */
import type { Logger } from '../log.js';
import type { RateLimitedLog } from '../log.js';
import type { NodeRecord, NodeRegistry } from '../nodes/registry.js';
import type { BootTimeline, BootStage } from '../boot/timeline.js';
import type { BootAddresses } from '../trust/boot-origin.js';
import { archName, chooseFirstStage, clientArchOf, wantsNetworkBoot, type BootSite, type FirstStageDecision } from '../boot/first-stage.js';
import type { DhcpPacket, ReceivedPacket } from './codec.js';
import type { Destination } from './policy.js';
import { startsNewBoot } from './policy.js';

/** Counters for /metrics; monotonic. */
export interface DhcpCounters {
  /** Datagrams read from the sockets. */
  received: number;
  /** Not a DHCP packet (DecodeError). */
  malformed: number;
  /** Valid but not answered: denied MAC, unsupported architecture, pool exhausted, foreign relay, wrong message... */
  dropped: number;
  discover: number;
  request: number;
  decline: number;
  release: number;
  inform: number;
  offer: number;
  ack: number;
  nak: number;
  proxyOffer: number;
  proxyAck: number;
  /** Replies the kernel refused to send. */
  sendErrors: number;
  /** Leases the store could not write (no ACK was sent). */
  storeErrors: number;
  /** ACKs that confirmed a stored lease without a write (lease caching; counted in `ack` too). */
  ackCached: number;
}

export function newCounters(): DhcpCounters {
  return {
    received: 0,
    malformed: 0,
    dropped: 0,
    discover: 0,
    request: 0,
    decline: 0,
    release: 0,
    inform: 0,
    offer: 0,
    ack: 0,
    nak: 0,
    proxyOffer: 0,
    proxyAck: 0,
    sendErrors: 0,
    storeErrors: 0,
    ackCached: 0,
  };
}

export interface DhcpContext {
  nodes: Pick<NodeRegistry, 'admit' | 'byMac' | 'recordBoot' | 'setIp' | 'policy'>;
  timeline: Pick<BootTimeline, 'record' | 'latest'>;
  site: BootSite;
  log: Logger;
  limited: RateLimitedLog;
  counters: DhcpCounters;
  now: () => number;
  /** Where each registered MAC's DHCP exchange of this boot came from: its boot script must come from there. */
  bootAddresses?: Pick<BootAddresses, 'remember'>;
}

/** A reply and where it goes; null when the right answer is silence. */
export type Answer = { reply: DhcpPacket; to: Destination } | null;

export type Identity = { ok: true; node: NodeRecord | undefined; boot: FirstStageDecision } | { ok: false };

/**
 * Who is asking. A network-boot request (PXEClient, HTTPClient, iPXE) registers the machine
 * under the enrollment policy (deny: no answer; pending: it boots, and its agent waits for
 * approval). Any other DHCP client (an OS) is served without being registered, unless the
 * policy is deny and the MAC unknown. Unsupported architectures are refused before
 * registering anything.
 */
export function identify(req: ReceivedPacket, ctx: DhcpContext): Identity {
  const known = ctx.nodes.byMac(req.mac);
  if (!wantsNetworkBoot(req)) {
    if (!known && ctx.nodes.policy === 'deny') {
      ctx.nodes.admit(req.mac); // remembers who knocked, for the operator
      drop(ctx, `deny:${req.mac}`, { mac: req.mac }, 'unknown MAC refused (enrollment: deny)');
      return { ok: false };
    }
    return { ok: true, node: known, boot: { kind: 'none' } };
  }
  const first = chooseFirstStage(req, known, ctx.site);
  if (first.kind === 'unsupported') {
    const arch = clientArchOf(req);
    ctx.counters.dropped++;
    ctx.limited.warn(
      `unsupported:${req.mac}`,
      { mac: req.mac, arch, archName: arch === undefined ? undefined : archName(arch), vendorClass: req.vendorClass, reason: first.reason },
      'boot request not answered: unsupported client',
    );
    // A machine we know (say, listed in the cluster file) shows on its timeline why it did not boot.
    if (known && req.type === 'discover') ctx.timeline.record(req.mac, 'dhcp.ignored', { arch, reason: first.reason });
    return { ok: false };
  }
  const admitted = ctx.nodes.admit(req.mac);
  if (admitted.kind === 'deny') {
    if (admitted.capped) {
      // A flood of made-up MACs: one key for all of them, so the log stays readable.
      ctx.counters.dropped++;
      ctx.limited.warn('deny:capped', { mac: req.mac, reason: admitted.reason }, 'boot request refused: auto-enrolment cap');
    } else drop(ctx, `deny:${req.mac}`, { mac: req.mac, reason: admitted.reason }, 'boot request refused');
    return { ok: false };
  }
  return { ok: true, node: admitted.node, boot: chooseFirstStage(req, admitted.node, ctx.site) };
}

/**
 * Records a timeline stage for registered machines only (random DHCP clients are not
 * nodes); a network-boot DISCOVER that starts a new boot also counts the boot.
 */
export function recordStage(
  ctx: DhcpContext,
  req: ReceivedPacket,
  node: NodeRecord | undefined,
  stage: BootStage,
  detail: () => Record<string, unknown>,
): void {
  if (!node) return;
  let newBoot = false;
  if (stage === 'dhcp.discover') {
    newBoot = startsNewBoot(req, ctx.timeline.latest(req.mac), ctx.now());
    if (newBoot) ctx.nodes.recordBoot(req.mac, { fromDhcp: true });
  }
  ctx.timeline.record(req.mac, stage, detail(), { newBoot });
}

export function drop(ctx: DhcpContext, key: string, fields: Record<string, unknown>, msg: string): void {
  ctx.counters.dropped++;
  ctx.limited.debug(key, fields, msg);
}

/** Boot facts for timeline details and log lines. */
export function bootDetail(req: DhcpPacket, boot: FirstStageDecision): Record<string, unknown> {
  const d: Record<string, unknown> = {};
  const arch = clientArchOf(req);
  if (arch !== undefined) d.arch = arch;
  if (req.vendorClass) d.vendorClass = req.vendorClass;
  if (boot.kind === 'tftp') d.file = boot.file;
  else if (boot.kind === 'http' || boot.kind === 'script') d.file = boot.url;
  return d;
}
