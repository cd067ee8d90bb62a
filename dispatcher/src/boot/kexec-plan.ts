/**
 * What a node needs to boot its next image without the firmware (kexec): the same files and
 * command line its boot script would give it, with each file's sha256 so the agent checks what
 * it fetched, and a fresh boot token for the new kernel's agent. Issuing that token ends the
 * current boot's reconnect credential, as a boot script does: so it is issued last, once every
 * file is known to be there.
 */
import type { Core } from '../core.js';
import type { KexecPlan, FileRef } from '../protocol/messages.js';
import type { NodeRecord } from '../nodes/registry.js';
import { versionLabel, type ImageVersion } from '../images/catalog.js';
import type { BootFile } from './boot-files.js';
import type { ImageFiles } from './image-files.js';
import { kernelCommandLine } from './ipxe-script.js';
import { memoryRefusal } from './memory-fit.js';
import { macHyphenated } from '../nodes/mac.js';

export type PlannedKexec = { ok: true; plan: KexecPlan; version: ImageVersion } | { ok: false; reason: string };

/** The URL folder of an image version's files (boot scripts and kexec plans alike). */
export function imageUrl(dispatcherUrl: string, v: Pick<ImageVersion, 'image' | 'version'>): string {
  return `${dispatcherUrl}/image/${v.image}/${v.version}`;
}

export async function planKexec(
  core: Core,
  files: ImageFiles,
  node: Pick<NodeRecord, 'mac' | 'image' | 'labels'>,
  dispatcherUrl: string,
): Promise<PlannedKexec> {
  const next = core.images.assignments.next(node);
  if (!next.ok) return { ok: false, reason: `${next.reason}; ${next.hint}` };
  const v = next.version;
  const tooBig = memoryRefusal(v, core.nodes.byMac(node.mac) ?? { name: node.mac, inventory: null }, core.config.kernelArgs);
  if (tooBig) return { ok: false, reason: tooBig };
  const served = files.of(v);
  const names = v.hasRoot ? (['vmlinuz', 'root.cpio', 'initrd.img'] as const) : (['vmlinuz', 'initrd.img'] as const);
  const loaded: BootFile[] = [];
  for (const name of names) {
    const f = await served.get(name);
    if (!f) return { ok: false, reason: `${versionLabel(v)}: ${name} cannot be read from ${v.dir}` };
    loaded.push(f);
  }
  const base = imageUrl(dispatcherUrl, v);
  // ?mac= as in boot scripts: the downloads land on this node's timeline whatever its address.
  const ref = (f: BootFile): FileRef => ({ url: `${base}/${f.name}?mac=${macHyphenated(node.mac)}`, sha256: f.sha256, size: f.size });
  const token = await core.bootTokens.issueGrouped(node.mac, core.commits);
  const cmdline = kernelCommandLine({
    dispatcherUrl,
    peers: core.config.peers,
    token,
    kernelArgs: core.config.kernelArgs,
    pubkeyB64: v.keyStatus === 'ours' ? null : core.secrets.identity.publicKeyB64,
    withRoot: v.hasRoot,
    image: versionLabel(v),
    via: 'kexec',
  });
  const [kernel, ...initrds] = loaded;
  return { ok: true, version: v, plan: { kernel: ref(kernel!), initrds: initrds.map(ref), cmdline } };
}
