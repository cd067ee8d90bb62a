/**
 * Whether a node's memory can hold an image: the kernel, the base initrd unpacked and the
 * root as the node will carry it (compressed, or unpacked with `lc.root=unpack`). Boot scripts,
 * kexec plans and `set --image` refuse a node that is known to be too small.
 */
import { inventorySummary } from '../api/nodes/view.js';
import type { NodeRecord } from '../nodes/registry.js';
import { versionLabel, type ImageVersion } from '../images/catalog.js';

/** RAM beyond what an image's files take that a node needs to come up (kernel, agent, page cache). */
export const BOOT_HEADROOM_MIB = 64;

/**
 * Why a node cannot boot this image, when its memory (from its last hello) is known to be too
 * small for it: the kernel, the base initrd unpacked and the root as the node will carry it.
 * The first boot of a machine is not checked here (no inventory yet); /init checks then.
 */
export function memoryRefusal(v: ImageVersion, node: Pick<NodeRecord, 'name' | 'inventory'>, kernelArgs: string): string | null {
  const have = inventorySummary(node.inventory).memoryMiB;
  if (!v.memoryBytes || !have) return null;
  const unpack = /(^|\s)lc\.root=unpack(\s|$)/.test(kernelArgs);
  const need = Math.ceil((unpack ? v.memoryBytes.unpacked : v.memoryBytes.compressed) / 1048576) + BOOT_HEADROOM_MIB;
  if (need <= have) return null;
  return `${versionLabel(v)} needs about ${need} MiB of RAM (kernel, base initrd, root${unpack ? ' unpacked' : ''}) and ${node.name} has ${have} MiB: give it a smaller image (dispatcherctl set ${node.name} --image NAME) or more memory`;
}
