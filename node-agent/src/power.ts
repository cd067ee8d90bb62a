/**
 * The real Power: reboot and poweroff. On the RAM image (root file system in RAM, nothing
 * to lose) they are always allowed; on an ordinary host only with --allow-power, because
 * rebooting someone's workstation from the dispatcher must be a deliberate choice.
 *
 * `reboot -f` / `poweroff -f` (busybox and systemd both take -f: no init shutdown, which a
 * RAM node does not need); if that fails, the magic SysRq key (b: reboot, o: power off) as
 * the last resort — it does not sync disks, which a diskless node does not have.
 *
 * kexec (kexec.ts) boots another kernel without the firmware; the same refusal applies.
 */
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import type { KexecPlan } from '../../dispatcher/src/protocol/messages.js';
import { execLoaded, loadPlan, unloadKexec, type KexecOptions } from './kexec.js';
import type { Power } from './seams.js';

export class SystemPower implements Power {
  constructor(private readonly opts: { ramRoot: boolean; allowPower: boolean; kexec: KexecOptions }) {}

  refusal(): string | null {
    if (this.opts.ramRoot || this.opts.allowPower) return null;
    return 'this agent runs on a host with a disk root; power commands need the agent to be started with --allow-power';
  }

  reboot(): Promise<void> {
    return this.#act(['reboot', '-f'], 'b');
  }

  poweroff(): Promise<void> {
    return this.#act(['poweroff', '-f'], 'o');
  }

  async loadKexec(plan: KexecPlan): Promise<void> {
    const refusal = this.refusal();
    if (refusal) throw new Error(refusal);
    await loadPlan(plan, this.opts.kexec);
  }

  async execKexec(): Promise<void> {
    const refusal = this.refusal();
    if (refusal) throw new Error(refusal);
    const why = await execLoaded(this.opts.kexec);
    await unloadKexec(this.opts.kexec);
    throw new Error(why);
  }

  async #act(argv: string[], sysrq: string): Promise<void> {
    const refusal = this.refusal();
    if (refusal) throw new Error(refusal);
    const ok = await new Promise<boolean>((resolve) => {
      const child = spawn(argv[0]!, argv.slice(1), { stdio: 'ignore' });
      child.once('error', () => resolve(false));
      child.once('exit', (code) => resolve(code === 0));
    });
    if (ok) return;
    await writeFile('/proc/sys/kernel/sysrq', '1').catch(() => {});
    await writeFile('/proc/sysrq-trigger', sysrq);
  }
}
