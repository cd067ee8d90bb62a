/**
 * Who may join: pure decisions on a hello, given the token checks and the registry's
 * enrollment policy. The hub only applies them.
 *
 *   1. protocol version must match                       → else refused `protocol`
 *   2. token, by kind:
 *        boot     the per-boot token of this MAC's current boot, not used, not expired
 *        session  the reconnect credential of an earlier session of this boot
 *        enroll   the data-dir enroll.token or a created enrollment token that admits this
 *                 MAC                                    → else refused `bad-token`
 *   3. an enrollment token never claims the MAC of a node that booted by PXE or is
 *      connected (those prove themselves by boot token or session) → refused `denied`
 *   4. registry admit(mac): boot → admitted; pending (approve policy) → refused `pending`,
 *      retry later; deny (policy, or the auto-enrolment cap) → refused `denied`
 * Tokens are checked before the registry sees the MAC, so a stranger with a wrong token
 * leaves no trace but a log line. Spending the boot token is the hub's job, once admitted.
 */
import type { NodeRecord, AdmitDecision } from '../nodes/registry.js';
import type { Mac } from '../nodes/mac.js';
import type { NodeCapacity } from '../dispatch/contract.js';
import type { BootTokenCheck } from '../trust/boot-tokens.js';
import type { EnrollCheck } from '../trust/enroll-tokens.js';
import type { BootedImage } from '../protocol/messages.js';
import { PROTOCOL_VERSION, type HelloMessage, type RefusalReason, type Inventory } from '../protocol/messages.js';

/** An agent waiting for approval asks again this often. */
export const PENDING_RETRY_MS = 10_000;

export interface AdmissionChecks {
  /** Does not spend the token (the hub does, once the hello is admitted). */
  bootToken(mac: Mac, token: string): BootTokenCheck;
  session(mac: Mac, credential: string): boolean;
  enrollToken(mac: Mac, token: string): EnrollCheck;
  /** Why an enrollment token may not claim this MAC (PXE-booted, connected); undefined when it may. */
  enrollBlocked(mac: Mac): string | undefined;
  admit(mac: Mac, opts: { enrolled: boolean }): AdmitDecision;
}

export type Admission =
  | { kind: 'admitted'; node: NodeRecord }
  | { kind: 'refused'; reason: RefusalReason; message: string; retryAfterMs?: number };

const BOOT_TOKEN_WHY: Record<Exclude<BootTokenCheck, 'ok'>, string> = {
  unknown: 'is not the token of its current boot (each boot script issues a fresh one)',
  used: 'was already used by a hello (a boot token admits one; reconnects use the session credential)',
  expired: 'has expired (the agent must say hello within minutes of its boot script; reboot the machine)',
};

export function decideAdmission(hello: HelloMessage, mac: Mac, checks: AdmissionChecks): Admission {
  if (hello.protocol !== PROTOCOL_VERSION)
    return {
      kind: 'refused',
      reason: 'protocol',
      message: `this dispatcher speaks agent protocol ${PROTOCOL_VERSION}, the agent ${hello.protocol}: update the image or the agent`,
    };
  const badToken = (message: string): Admission => ({ kind: 'refused', reason: 'bad-token', message });
  const { kind, token } = hello.auth;
  if (kind === 'boot') {
    const c = checks.bootToken(mac, token);
    if (c !== 'ok')
      return badToken(`boot token for ${mac} ${BOOT_TOKEN_WHY[c]}; a machine that did not PXE-boot needs an enrollment token`);
  } else if (kind === 'session') {
    if (!checks.session(mac, token))
      return badToken(`session credential not valid for ${mac} (a new boot of the machine ends its sessions)`);
  } else {
    const c = checks.enrollToken(mac, token);
    if (!c.ok)
      return badToken(
        c.why === 'expired'
          ? 'enrollment token expired: dispatcherctl enroll-token create'
          : c.why === 'other-mac'
            ? `enrollment token admits another MAC, not ${mac}`
            : 'wrong enrollment token (see enroll.token in the dispatcher data dir, or dispatcherctl enroll-token create)',
      );
    const blocked = checks.enrollBlocked(mac);
    if (blocked) return { kind: 'refused', reason: 'denied', message: `an enrollment token cannot claim ${mac}: ${blocked}` };
  }
  const d = checks.admit(mac, { enrolled: kind === 'enroll' });
  switch (d.kind) {
    case 'boot':
      return { kind: 'admitted', node: d.node };
    case 'pending':
      return {
        kind: 'refused',
        reason: 'pending',
        message: `${d.node.name} (${mac}) waits for approval: dispatcherctl nodes approve ${d.node.name}`,
        retryAfterMs: PENDING_RETRY_MS,
      };
    case 'deny':
      return { kind: 'refused', reason: 'denied', message: d.reason, ...(d.capped ? { retryAfterMs: 60_000 } : {}) };
  }
}

/** What the engine matches tasks against: the registry's name and labels, the agent's inventory. */
export function capacityOf(node: NodeRecord, inventory: Inventory, image: BootedImage | undefined): NodeCapacity {
  return {
    mac: node.mac,
    name: node.name,
    labels: node.labels,
    cores: inventory.cpu.cores,
    memoryMiB: inventory.memoryMiB,
    image: image?.name ?? null,
  };
}
