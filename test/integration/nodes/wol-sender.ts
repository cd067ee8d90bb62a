/**
 * Test helper run inside a network namespace (bundled by wol.test.ts): sends a Wake-on-LAN
 * packet the way the dispatcher does for `--interface IF`, or by directed broadcast without it.
 *   node wol-sender.mjs <mac> <interface|-> [address netmask]
 */
import { resolveNodeNetwork } from '../../../dispatcher/src/net/interfaces.js';
import { sendWake } from '../../../dispatcher/src/nodes/wol.js';
import { parseMac, type Mac } from '../../../dispatcher/src/nodes/mac.js';

const [macText, iface, address, netmask] = process.argv.slice(2);
const mac = parseMac(macText ?? '') as Mac;
const target =
  iface && iface !== '-'
    ? resolveNodeNetwork(iface, undefined)
    : { ifindex: undefined, address: address ?? '127.0.0.1', netmask: netmask ?? '255.255.255.0' };
const sent = await sendWake(mac, target);
console.log(JSON.stringify(sent));
