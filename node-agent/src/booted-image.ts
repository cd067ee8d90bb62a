/**
 * The image this boot came from, for the hello (protocol BootedImage): the dispatcher's boot
 * script and kexec plans put `lc.image=<name>@<version>` on the kernel command line, and
 * `lc.via=kexec` when the node came up by kexec. Hosts the dispatcher did not boot have no
 * `lc.image` and report no image. Pure but for readCmdline.
 */
import { readFileSync } from 'node:fs';
import type { BootedImage } from '../../dispatcher/src/protocol/messages.js';
import { parseKernelCmdline } from './config.js';
import type { TaskRootConfig } from './task-root.js';

/** BootedImage's bounds in the protocol. */
const MAX_NAME = 64;
const MAX_DETAIL = 4096;
/** What an image name or version may hold: printable, no spaces (the command line splits on them). */
const PART_RE = /^[\x21-\x7e]{1,64}$/;

export type Health = Pick<BootedImage, 'health' | 'healthDetail'>;

/**
 * The image's health check as the agent ran it at start (task-root.ts): `passed` when the root
 * has a check and it passed, `failed` with the reason when the root was refused (its check
 * failed, or the root cannot run tasks at all: either way the image is not fit for work),
 * `none` when there is no root or no check.
 */
export function healthOf(c: TaskRootConfig): Health {
  if (c.kind === 'refused')
    return { health: 'failed', healthDetail: c.reason.length > MAX_DETAIL ? `${c.reason.slice(0, MAX_DETAIL - 1)}…` : c.reason };
  if (c.kind === 'root' && c.root.health) return { health: 'passed' };
  return { health: 'none' };
}

/**
 * The booted image, or undefined with `problem` when `lc.image` is absent (problem undefined:
 * nothing to say) or malformed (problem says why, for the log).
 */
export function bootedImage(cmdline: string, health: Health): { image?: BootedImage; problem?: string } {
  const args = parseKernelCmdline(cmdline);
  const spec = args.get('lc.image');
  if (spec === undefined) return {};
  const at = spec.lastIndexOf('@');
  const name = spec.slice(0, Math.max(at, 0));
  const version = at < 0 ? '' : spec.slice(at + 1);
  if (!PART_RE.test(name) || !PART_RE.test(version))
    return {
      problem: `lc.image=${JSON.stringify(spec.slice(0, 200))} on the kernel command line is not <name>@<version> (each 1 to ${MAX_NAME} printable characters): the hello names no image`,
    };
  const via = args.get('lc.via') === 'kexec' ? 'kexec' : 'firmware';
  return {
    image: {
      name,
      version,
      via,
      health: health.health,
      ...(health.healthDetail !== undefined ? { healthDetail: health.healthDetail } : {}),
    },
  };
}

/** /proc/cmdline, or '' where there is none (not Linux, /proc not mounted). */
export function readCmdline(path = '/proc/cmdline'): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}
