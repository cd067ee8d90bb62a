/**
 * Full mode: the dispatcher is the node network's DHCP server — addresses and boot
 * information (RFC 2131 §4.3). One path for DISCOVER and REQUEST: identify the client,
 * choose its address, then say so (OFFER) or bind it durably and confirm (ACK).
 */
import type { Mac } from '../nodes/mac.js';
import type { ReceivedPacket } from './codec.js';
import type { AddressPool } from './allocator.js';
import type { Lease, LeaseStore } from './leases.js';
import { inSubnet, intToIp, ipToInt, ZERO_IP } from './ipv4.js';
import { informReply, leaseReply, nakReply, replyDestination, requestState, type LeaseParams } from './policy.js';
import { bootDetail, drop, identify, recordStage, type Answer, type DhcpContext } from './context.js';

/** A declined address (another host answers ARP for it) is set aside this long (RFC 2131 §4.3.3). */
export const DECLINE_HOLD_MS = 10 * 60_000;

export interface FullModeConfig {
  serverId: string;
  subnetMask: string;
  /** Configured routers; empty: none, or the relay for relayed clients. */
  routers: string[];
  dns: string[];
  leaseSeconds: number;
  /** See DhcpConfig.leaseCacheThreshold: 0 writes every ACK's lease. */
  leaseCacheThreshold: number;
}

export class FullModeHandler {
  constructor(
    private readonly ctx: DhcpContext,
    private readonly pool: AddressPool,
    private readonly leases: LeaseStore,
    private readonly config: FullModeConfig,
  ) {}

  async handle(req: ReceivedPacket): Promise<Answer> {
    const { ctx } = this;
    if (req.op !== 'request' || req.type === null) {
      drop(ctx, 'not-dhcp-request', { mac: req.mac, op: req.op }, 'not a DHCP client message (BOOTP or a reply)');
      return null;
    }
    if (req.giaddr !== ZERO_IP && !inSubnet(ipToInt(req.giaddr)!, this.pool.config.subnet)) {
      drop(ctx, `relay:${req.giaddr}`, { mac: req.mac, giaddr: req.giaddr }, 'relayed from a subnet we have no range for');
      return null;
    }
    switch (req.type) {
      case 'discover':
        ctx.counters.discover++;
        return this.#discover(req);
      case 'request':
        ctx.counters.request++;
        return this.#request(req);
      case 'decline':
        ctx.counters.decline++;
        return this.#decline(req);
      case 'release':
        ctx.counters.release++;
        return this.#release(req);
      case 'inform':
        ctx.counters.inform++;
        return this.#inform(req);
      default:
        drop(ctx, `server-message:${req.type}`, { mac: req.mac, type: req.type }, 'a server message sent to the server port');
        return null;
    }
  }

  #discover(req: ReceivedPacket): Answer {
    const { ctx } = this;
    const who = identify(req, ctx);
    if (!who.ok) return null;
    const now = ctx.now();
    recordStage(ctx, req, who.node, 'dhcp.discover', () => bootDetail(req, who.boot));
    const requested = req.requestedIp === undefined ? undefined : ipToInt(req.requestedIp);
    const ip = this.pool.pick(req.mac, requested, now);
    if (ip === undefined) {
      ctx.counters.dropped++;
      ctx.limited.warn(
        'pool-exhausted',
        { mac: req.mac, poolSize: this.pool.size, leases: this.leases.size },
        'address pool exhausted: DISCOVER not answered',
      );
      return null;
    }
    this.pool.holdOffer(req.mac, ip, now);
    const reply = leaseReply('offer', req, intToIp(ip), this.#params(req), who.boot, who.node?.name);
    ctx.counters.offer++;
    recordStage(ctx, req, who.node, 'dhcp.offer', () => ({ ip: reply.yiaddr, ...bootDetail(req, who.boot) }));
    if (who.node) ctx.log.info({ mac: req.mac, node: who.node.name, ip: reply.yiaddr, ...bootDetail(req, who.boot) }, 'offer');
    return { reply, to: replyDestination(req, reply) };
  }

  async #request(req: ReceivedPacket): Promise<Answer> {
    const { ctx } = this;
    const state = requestState(req);
    if (state === 'malformed') {
      drop(
        ctx,
        'request-malformed',
        { mac: req.mac, ciaddr: req.ciaddr, requestedIp: req.requestedIp, serverId: req.serverId },
        'DHCPREQUEST fits no RFC 2131 state',
      );
      return null;
    }
    if (state === 'selecting' && req.serverId !== this.config.serverId) {
      // The client took another server's offer (RFC 2131 §4.3.2): free ours, say nothing.
      this.pool.dropOffer(req.mac);
      return null;
    }
    const who = identify(req, ctx);
    if (!who.ok) return null;
    const now = ctx.now();
    const wanted = state === 'renewing' ? req.ciaddr : req.requestedIp!;
    recordStage(ctx, req, who.node, 'dhcp.request', () => ({ ip: wanted, state }));
    const ip = ipToInt(wanted)!;
    if (!inSubnet(ip, this.pool.config.subnet)) return this.#nak(req, who.node?.name, wanted, 'requested address is not on this network');
    if (!this.pool.acceptable(req.mac, ip, now))
      return this.#nak(req, who.node?.name, wanted, 'requested address is not available to this client');

    const params = this.#params(req);
    const hostname = who.node?.name ?? req.hostname ?? null;
    const leaseMs = params.leaseSeconds * 1000;
    // A boot asks three times within seconds (PXE ROM, iPXE, Linux): a lease that young is
    // confirmed as stored, with its remaining lifetime, instead of waiting for another fsync.
    const threshold = this.config.leaseCacheThreshold;
    const cached = threshold > 0 ? this.leases.reuse(req.mac, ip, hostname, now, leaseMs * (1 - threshold)) : undefined;
    let lease: Lease;
    try {
      lease = await (cached ?? this.leases.bind(req.mac, ip, now + leaseMs, hostname, now));
    } catch (err) {
      ctx.counters.storeErrors++;
      ctx.limited.warn('store-failed', { mac: req.mac, ip: wanted, err: (err as Error)?.message }, 'lease not stored: no ACK sent');
      return null;
    }
    this.pool.dropOffer(req.mac);
    if (who.node) {
      ctx.nodes.setIp(req.mac, wanted);
      // The boot script of this boot must come from this address (relayed: from the relay's subnet).
      ctx.bootAddresses?.remember(
        req.mac,
        req.giaddr === ZERO_IP ? { kind: 'ip', ip: wanted } : { kind: 'subnet', subnet: this.pool.config.subnet, relay: req.giaddr },
      );
    }
    const reply = leaseReply(
      'ack',
      req,
      wanted,
      { ...params, leaseSeconds: Math.floor((lease.expiresAt - now) / 1000) },
      who.boot,
      who.node?.name,
    );
    ctx.counters.ack++;
    if (cached) ctx.counters.ackCached++;
    recordStage(ctx, req, who.node, 'dhcp.ack', () => ({ ip: wanted, ...bootDetail(req, who.boot) }));
    if (who.node) ctx.log.info({ mac: req.mac, node: who.node.name, ip: wanted, state, ...bootDetail(req, who.boot) }, 'ack');
    return { reply, to: replyDestination(req, reply) };
  }

  #nak(req: ReceivedPacket, node: string | undefined, ip: string, why: string): Answer {
    const { ctx } = this;
    const reply = nakReply(req, this.config.serverId, why);
    ctx.counters.nak++;
    if (node) {
      ctx.timeline.record(req.mac, 'dhcp.nak', { ip, reason: why });
      ctx.log.info({ mac: req.mac, node, ip, reason: why }, 'nak');
    }
    return { reply, to: replyDestination(req, reply) };
  }

  async #decline(req: ReceivedPacket): Promise<Answer> {
    const { ctx } = this;
    if (req.serverId !== undefined && req.serverId !== this.config.serverId) return null;
    const ip = req.requestedIp === undefined ? undefined : ipToInt(req.requestedIp);
    const now = ctx.now();
    if (ip === undefined || !this.#isOrWasOffered(req.mac, ip)) {
      drop(
        ctx,
        `decline:${req.mac}`,
        { mac: req.mac, requestedIp: req.requestedIp },
        'DHCPDECLINE for an address this client does not hold',
      );
      return null;
    }
    this.pool.dropOffer(req.mac);
    ctx.log.warn(
      { mac: req.mac, ip: req.requestedIp, holdMinutes: DECLINE_HOLD_MS / 60_000 },
      'address declined: another host uses it; set aside',
    );
    try {
      await this.leases.decline(ip, now + DECLINE_HOLD_MS, now);
    } catch (err) {
      ctx.counters.storeErrors++;
      ctx.limited.warn('store-failed', { mac: req.mac, err: (err as Error)?.message }, 'declined address not stored');
    }
    return null;
  }

  async #release(req: ReceivedPacket): Promise<Answer> {
    const { ctx } = this;
    if (req.serverId !== undefined && req.serverId !== this.config.serverId) return null;
    const lease = this.leases.byMac(req.mac);
    const now = ctx.now();
    if (!lease || intToIp(lease.ip) !== req.ciaddr || lease.state !== 'bound') {
      drop(ctx, `release:${req.mac}`, { mac: req.mac, ciaddr: req.ciaddr }, 'DHCPRELEASE for an address this client does not hold');
      return null;
    }
    try {
      await this.leases.release(lease, now);
      this.pool.invalidateFullPool();
      ctx.log.debug({ mac: req.mac, ip: req.ciaddr }, 'released');
    } catch (err) {
      ctx.counters.storeErrors++;
      ctx.limited.warn('store-failed', { mac: req.mac, err: (err as Error)?.message }, 'release not stored');
    }
    return null;
  }

  #inform(req: ReceivedPacket): Answer {
    const { ctx } = this;
    if (req.ciaddr === ZERO_IP) {
      drop(ctx, 'inform-no-ciaddr', { mac: req.mac }, 'DHCPINFORM without ciaddr');
      return null;
    }
    const who = identify(req, ctx);
    if (!who.ok) return null;
    const reply = informReply(req, this.#params(req), who.boot, who.node?.name);
    ctx.counters.ack++;
    return { reply, to: replyDestination(req, reply) };
  }

  #isOrWasOffered(mac: Mac, ip: number): boolean {
    return this.leases.byMac(mac)?.ip === ip || this.pool.offeredTo(mac) === ip;
  }

  #params(req: ReceivedPacket): LeaseParams {
    const c = this.config;
    return {
      serverId: c.serverId,
      subnetMask: c.subnetMask,
      routers: c.routers.length ? c.routers : req.giaddr !== ZERO_IP ? [req.giaddr] : [],
      dns: c.dns,
      leaseSeconds: c.leaseSeconds,
    };
  }
}
