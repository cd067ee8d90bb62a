/**
 * Proxy mode (ProxyDHCP, PXE 2.1 §2.2.3): another server on the network hands out addresses;
 * the dispatcher answers network-boot clients with boot information only — on port 67 an
 * OFFER without an address beside the other server's, on port 4011 an ACK to the PXE
 * client's boot-server REQUEST. Non-boot clients and every other message are ignored.
 */
import type { ReceivedPacket } from './codec.js';
import { proxyReply, replyDestination, type Destination } from './policy.js';
import { bootDetail, drop, identify, recordStage, type Answer, type DhcpContext } from './context.js';
import { wantsNetworkBoot } from '../boot/first-stage.js';
import { ZERO_IP } from './ipv4.js';

export class ProxyModeHandler {
  constructor(
    private readonly ctx: DhcpContext,
    private readonly serverAddress: string,
  ) {}

  /** Port 67: answer PXE/HTTP/iPXE DISCOVERs with a ProxyDHCP offer. */
  handleDhcpPort(req: ReceivedPacket): Answer {
    const { ctx } = this;
    if (req.op !== 'request' || req.type !== 'discover') {
      // REQUESTs and the rest belong to the DHCP server that gives the addresses; a network-boot
      // client's REQUEST still says which address it takes: its boot script must come from there.
      if (req.type === 'request') {
        ctx.counters.request++;
        const ip = req.requestedIp ?? (req.ciaddr !== ZERO_IP ? req.ciaddr : undefined);
        if (ip && wantsNetworkBoot(req) && ctx.nodes.byMac(req.mac)) ctx.bootAddresses?.remember(req.mac, { kind: 'ip', ip });
      }
      return null;
    }
    ctx.counters.discover++;
    if (!wantsNetworkBoot(req)) return null;
    const who = identify(req, ctx);
    if (!who.ok || who.boot.kind === 'none' || who.boot.kind === 'unsupported') return null;
    recordStage(ctx, req, who.node, 'dhcp.discover', () => bootDetail(req, who.boot));
    const reply = proxyReply(req, 'offer', who.boot, this.serverAddress);
    ctx.counters.proxyOffer++;
    recordStage(ctx, req, who.node, 'proxy.offer', () => bootDetail(req, who.boot));
    ctx.log.info({ mode: 'proxy', mac: req.mac, node: who.node?.name, ...bootDetail(req, who.boot) }, 'proxy offer');
    return { reply, to: replyDestination(req, reply) };
  }

  /** Port 4011: the client, now with an address, asks the boot server for its file. */
  handlePxePort(req: ReceivedPacket, from: Destination): Answer {
    const { ctx } = this;
    if (req.op !== 'request' || (req.type !== 'request' && req.type !== 'inform')) {
      drop(ctx, 'pxe-port-type', { mac: req.mac, type: req.type }, 'port 4011 takes DHCPREQUEST only');
      return null;
    }
    if (!wantsNetworkBoot(req)) {
      drop(ctx, 'pxe-port-not-pxe', { mac: req.mac }, 'port 4011 request without a PXE vendor class');
      return null;
    }
    const who = identify(req, ctx);
    if (!who.ok || who.boot.kind === 'none' || who.boot.kind === 'unsupported') return null;
    if (who.node) ctx.bootAddresses?.remember(req.mac, { kind: 'ip', ip: from.address });
    const reply = proxyReply(req, 'ack', who.boot, this.serverAddress);
    ctx.counters.proxyAck++;
    recordStage(ctx, req, who.node, 'proxy.ack', () => bootDetail(req, who.boot));
    ctx.log.info({ mode: 'proxy', mac: req.mac, node: who.node?.name, ...bootDetail(req, who.boot) }, 'proxy ack');
    // PXE 2.1 §2.2.5: the answer goes back where the request came from (the client's address and port).
    return { reply, to: from };
  }
}
