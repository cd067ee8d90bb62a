/**
 * Who may join: pure decisions on a hello, given the token checks and the registry's
 * enrollment policy. The hub only applies them.
 *
 *   1. protocol version must match                       → else refused `protocol`
 *   2. token: a per-boot token valid for this MAC (issued by the boot script), or the
 *      enrollment token (hosts that did not PXE-boot)     → else refused `bad-token`
 *   3. registry admit(mac): boot → admitted; pending (approve policy) → refused `pending`,
 *      retry later; deny → refused `denied`
 * The token is checked before the registry sees the MAC, so a stranger with a wrong token
 * leaves no trace but a log line.
 */
import type { NodeRecord, AdmitDecision } from '../nodes/registry.js';
import type { Mac } from '../nodes/mac.js';
import type { NodeCapacity } from '../dispatch/contract.js';
import { PROTOCOL_VERSION, type HelloMessage, type RefusalReason, type Inventory } from '../protocol/messages.js';

/** An agent waiting for approval asks again this often. */
export const PENDING_RETRY_MS = 10_000;

export interface AdmissionChecks {
  verifyBootToken(mac: Mac, token: string): boolean;
  verifyEnrollToken(token: string): boolean;
  admit(mac: Mac): AdmitDecision;
}

export type Admission =
  | { kind: 'admitted'; node: NodeRecord }
  | { kind: 'refused'; reason: RefusalReason; message: string; retryAfterMs?: number };

export function decideAdmission(hello: HelloMessage, mac: Mac, checks: AdmissionChecks): Admission {
  if (hello.protocol !== PROTOCOL_VERSION)
    return { kind: 'refused', reason: 'protocol', message: `this dispatcher speaks agent protocol ${PROTOCOL_VERSION}, the agent ${hello.protocol}: update the image or the agent` };
  const tokenOk = hello.auth.kind === 'boot' ? checks.verifyBootToken(mac, hello.auth.token) : checks.verifyEnrollToken(hello.auth.token);
  if (!tokenOk)
    return {
      kind: 'refused',
      reason: 'bad-token',
      message:
        hello.auth.kind === 'boot'
          ? `boot token not valid for ${mac} (each boot gets a fresh one; a machine that did not PXE-boot needs the enrollment token)`
          : 'wrong enrollment token (see enroll.token in the dispatcher data dir)',
    };
  const d = checks.admit(mac);
  switch (d.kind) {
    case 'boot':
      return { kind: 'admitted', node: d.node };
    case 'pending':
      return { kind: 'refused', reason: 'pending', message: `${d.node.name} (${mac}) waits for approval: dispatcherctl nodes approve ${d.node.name}`, retryAfterMs: PENDING_RETRY_MS };
    case 'deny':
      return { kind: 'refused', reason: 'denied', message: d.reason };
  }
}

/** What the engine matches tasks against: the registry's name and labels, the agent's inventory. */
export function capacityOf(node: NodeRecord, inventory: Inventory): NodeCapacity {
  return { mac: node.mac, name: node.name, labels: node.labels, cores: inventory.cpu.cores, memoryMiB: inventory.memoryMiB };
}
