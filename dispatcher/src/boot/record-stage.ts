/**
 * Records a boot-chain stage on the timeline, deciding whether it begins a new boot: a TFTP
 * transfer or a boot script after the previous boot got further (kernel, initrd, agent
 * hello) is a machine booting again, even when the dispatcher saw no DHCP (proxy or off
 * mode behind another DHCP server).
 */
import type { BootStage, BootStageRecord, BootTimeline } from './timeline.js';
import type { Logger } from '../log.js';
import type { Mac } from '../nodes/mac.js';

const AFTER_SCRIPT: ReadonlySet<BootStage> = new Set(['http.kernel', 'http.initrd', 'http.root', 'reboot.firmware', 'agent.hello']);
const AFTER_FIRST_STAGE: ReadonlySet<BootStage> = new Set([
  'http.script',
  'http.kernel',
  'http.initrd',
  'http.root',
  'http.failed',
  'reboot.firmware',
  'agent.hello',
]);

/** Pure: does `stage`, following `latest` of the current boot, start a new boot? */
export function startsNewBoot(stage: BootStage, latest: BootStage | undefined): boolean {
  if (!latest) return false; // the timeline opens a first boot by itself
  if (stage === 'tftp.sent') return AFTER_FIRST_STAGE.has(latest);
  if (stage === 'http.script') return AFTER_SCRIPT.has(latest);
  return false;
}

/** Records without ever throwing: a store problem must not break a transfer. */
export function recordStage(
  timeline: BootTimeline,
  log: Logger,
  mac: Mac,
  stage: BootStage,
  detail: Record<string, unknown>,
): BootStageRecord | undefined {
  try {
    const newBoot = startsNewBoot(stage, timeline.latest(mac)?.stage);
    return timeline.record(mac, stage, detail, { newBoot });
  } catch (err) {
    log.warn({ mac, stage, err: (err as Error).message }, 'cannot record boot stage');
    return undefined;
  }
}
