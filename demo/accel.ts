/**
 * KVM or TCG? /dev/kvm existing is not enough: in some nested VMs QEMU starts under KVM and
 * the guest never runs (here: a kernel prints nothing, or QEMU aborts on an MSR). So the
 * probe boots the image's kernel under KVM with no initrd and `panic=-1`: a working KVM gets
 * to the panic and QEMU exits (-no-reboot) within a second or two; anything else within
 * PROBE_TIMEOUT_MS means TCG.
 */
import { execFile } from 'node:child_process';
import { constants, accessSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const PROBE_TIMEOUT_MS = 8_000;

export interface AccelChoice {
  accel: 'kvm' | 'tcg';
  why: string;
}

export async function chooseAccel(kernel: string): Promise<AccelChoice> {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return { accel: 'tcg', why: 'no usable /dev/kvm' };
  }
  const dir = mkdtempSync(join(tmpdir(), 'lcdemo-kvm-'));
  const consoleLog = join(dir, 'console.log');
  try {
    const args = [
      '-machine',
      'pc,accel=kvm',
      '-cpu',
      'host',
      '-m',
      '256',
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-no-reboot',
      '-kernel',
      kernel,
      '-append',
      'console=ttyS0 panic=-1',
      '-serial',
      `file:${consoleLog}`,
    ];
    const started = Date.now();
    const code = await new Promise<0 | string>((resolve) => {
      execFile('qemu-system-x86_64', args, { timeout: PROBE_TIMEOUT_MS }, (err) => {
        resolve(!err ? 0 : err.killed ? 'timeout' : typeof err.code === 'number' ? `exit ${err.code}` : `${err.signal ?? err.code}`);
      });
    });
    let text = '';
    try {
      text = readFileSync(consoleLog, 'latin1');
    } catch {
      /* no console */
    }
    if (code === 0 && /Kernel panic/.test(text)) return { accel: 'kvm', why: `KVM boots a kernel (${Date.now() - started} ms probe)` };
    return {
      accel: 'tcg',
      why: code === 'timeout' ? 'KVM present but a guest kernel did not run' : `KVM present but QEMU failed under it (${code})`,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
