/**
 * `dispatcherctl forget NODE`: a node that is gone for good leaves the registry with what the
 * dispatcher keeps of it — DHCP leases, boot stages, boot and enrollment tokens, session
 * credentials. A connected node cannot be forgotten (its agent would say hello again at once);
 * a forgotten machine that boots again is a new machine under the enrollment policy.
 */
import type { Core } from '../core.js';
import { forgetLeaseRows } from '../dhcp/leases.js';
import { DispatcherError } from '../errors.js';
import type { Mac } from './mac.js';
import type { NodeRecord } from './registry.js';

export async function forgetNode(core: Core, live: { isConnected(mac: Mac): boolean }, ref: string): Promise<NodeRecord> {
  const n = core.nodes.find(ref);
  if (!n)
    throw new DispatcherError('DSP_ERR_NODE_NOT_FOUND', `no node named ${ref.slice(0, 80)}`, { hint: 'dispatcherctl nodes lists them' });
  if (live.isConnected(n.mac))
    throw new DispatcherError('DSP_ERR_NODE_STATE', `${n.name} is connected: only a node whose agent is gone can be forgotten`, {
      hint: `power it off first: dispatcherctl poweroff ${n.name}`,
    });
  const { mac } = n;
  core.bootTokens.forget(mac);
  core.enrollTokens.forget(mac);
  core.bootAddresses.forget(mac);
  await Promise.all([
    core.timeline.forget(mac),
    // The running DHCP server drops the lease from memory itself (onForget); the rows go here in any mode.
    forgetLeaseRows(core.db, core.commits, mac),
  ]);
  await core.nodes.forget(mac);
  return n;
}
