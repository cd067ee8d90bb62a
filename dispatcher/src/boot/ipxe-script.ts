/**
 * The iPXE scripts the dispatcher serves at /boot.ipxe: this module is the boot-script
 * template (pxe/README.md shows the boot chain around it). Pure: (machine, dispatcher URL,
 * token, config) in, script text out.
 *
 * Every script ends in a retry, never a hang: a failed download or a refused machine
 * prints why, sleeps and chains back to /boot.ipxe (which issues a fresh token).
 */
import { macHyphenated, type Mac } from '../nodes/mac.js';

/** Console on the VGA screen and on the first serial port (VMs, BMC serial-over-LAN). */
export const CONSOLE_ARGS = 'console=tty0 console=ttyS0,115200';
/** Seconds a refused or unidentified machine waits before asking again. */
export const REFUSED_RETRY_SECONDS = 60;
/** Seconds before retrying after a failed kernel/initrd download. */
export const DOWNLOAD_RETRY_SECONDS = 10;

export interface BootScriptInput {
  mac: Mac;
  nodeName: string;
  /** `http://<advertised address>:<port>`, no trailing slash. */
  dispatcherUrl: string;
  /** Every dispatcher's URL (standby dispatchers, config `peers`): the agent tries them after `dispatcherUrl`. */
  peers?: readonly string[];
  /** Per-boot token bound to this MAC (kernel command line `lc.token=`). */
  token: string;
  /** Extra kernel arguments from the configuration. */
  kernelArgs: string;
  /**
   * The dispatcher's public key (base64), passed as `lc.pubkey=` when the image does not
   * carry it (see image-key.ts); null when the image has it baked in.
   */
  pubkeyB64?: string | null;
  /** The machine waits for approval: it boots, and the agent is held until approved. */
  pending: boolean;
  /** The image has its own root (root.cpio), loaded as an initrd before the base one. */
  withRoot?: boolean;
  /** `name@version` of the image this boot gets (`lc.image=`: the agent reports it in its hello). */
  image?: string;
  /** Where the image's files are: `<dispatcherUrl>/image/<name>/<version>` (default `<dispatcherUrl>/image`). */
  imageUrl?: string;
  /** Where the script asks again (default `dispatcherUrl`): a boot server of another segment. */
  bootUrl?: string;
  /** Set when the kernel is started by kexec rather than the firmware (`lc.via=kexec`; no `initrd=` names). */
  via?: 'kexec';
}

/** Kernel command line: what /init reads (`lc.dispatcher`, `lc.token`) plus consoles and extras. */
export function kernelCommandLine(
  input: Pick<BootScriptInput, 'dispatcherUrl' | 'peers' | 'token' | 'kernelArgs' | 'pubkeyB64' | 'withRoot' | 'image' | 'via'>,
): string {
  // Under UEFI, iPXE hands the initrds to Linux by name: the kernel needs one `initrd=<name>`
  // each, in load order (harmless under BIOS, where iPXE loads them the legacy way). An image's
  // root.cpio comes first: UEFI's stub concatenates the files as they are, and the kernel finds
  // an archive after a compressed one only at a 4-byte boundary (root.cpio's length is one).
  // kexec hands the kernel one initrd itself: no names to give.
  const pubkey = input.pubkeyB64 ? `lc.pubkey=${input.pubkeyB64}` : '';
  const byName = input.via !== 'kexec';
  return [
    byName && input.withRoot ? 'initrd=root.cpio' : '',
    byName ? 'initrd=initrd.img' : '',
    `lc.dispatcher=${agentDispatchers(input.dispatcherUrl, input.peers)}`,
    `lc.token=${input.token}`,
    input.image ? `lc.image=${scriptSafe(input.image)}` : '',
    input.via ? `lc.via=${input.via}` : '',
    pubkey,
    CONSOLE_ARGS,
    scriptSafe(input.kernelArgs),
  ]
    .filter((s) => s.length > 0)
    .join(' ');
}

/**
 * `lc.dispatcher=`: the dispatcher the agent connects to first (the advertised address: a VIP
 * that follows the leader), then every other peer, comma-separated; the agent tries them in
 * turn (node-agent/src/dispatchers.ts). An entry that could not be one URL on a kernel
 * command line (a space, a comma, script syntax) is left out.
 */
export function agentDispatchers(dispatcherUrl: string, peers: readonly string[] = []): string {
  const urls = [dispatcherUrl, ...peers.filter((p) => p !== dispatcherUrl && /^https?:\/\/[^\s,#${}|&]+$/.test(p))];
  return urls.join(',');
}

export function bootScript(input: BootScriptInput): string {
  const m = macHyphenated(input.mac);
  const base = input.dispatcherUrl;
  const self = `${input.bootUrl ?? base}/boot.ipxe?mac=${m}`;
  const files = input.imageUrl ?? `${base}/image`;
  return [
    '#!ipxe',
    `# lilcluster: boot script for ${input.nodeName} (${input.mac})`,
    `echo lilcluster: booting ${scriptSafe(input.nodeName)} (${input.mac}) from ${base}${input.pending ? ' - waiting for approval' : ''}`,
    // --name: the initrd's name is what `initrd=` refers to, whatever the URL looks like.
    ...(input.image ? [`echo lilcluster: image ${scriptSafe(input.image)}`] : []),
    `kernel --name vmlinuz ${files}/vmlinuz?mac=${m} ${kernelCommandLine(input)} || goto retry`,
    ...(input.withRoot ? [`initrd --name root.cpio ${files}/root.cpio?mac=${m} || goto retry`] : []),
    `initrd --name initrd.img ${files}/initrd.img?mac=${m} || goto retry`,
    'boot || goto retry',
    ':retry',
    `echo lilcluster: could not load the image from ${base}; retrying in ${DOWNLOAD_RETRY_SECONDS} s`,
    `sleep ${DOWNLOAD_RETRY_SECONDS}`,
    `chain --autofree ${self}`,
    '',
  ].join('\n');
}

/** A machine that may not boot (enrollment: deny) learns why and asks again later. */
export function refusedScript(input: { mac: Mac; dispatcherUrl: string; reason: string; retrySeconds?: number }): string {
  return retryScript(
    `this machine (${input.mac}) may not boot: ${input.reason}`,
    `${input.dispatcherUrl}/boot.ipxe?mac=${macHyphenated(input.mac)}`,
    input.retrySeconds,
  );
}

/** The request named no usable MAC: iPXE fills it in on the retry. */
export function unidentifiedScript(input: { dispatcherUrl: string; reason: string }): string {
  return retryScript(input.reason, `${input.dispatcherUrl}/boot.ipxe?mac=\${mac:hexhyp}`);
}

function retryScript(why: string, url: string, seconds = REFUSED_RETRY_SECONDS): string {
  return [
    '#!ipxe',
    `echo lilcluster: ${scriptSafe(why)}`,
    `echo lilcluster: asking again in ${seconds} s`,
    `sleep ${seconds}`,
    `chain --autofree ${url}`,
    '',
  ].join('\n');
}

/**
 * Text placed in a script line: no line breaks or control characters (they would start a
 * new command), no `${` (iPXE would expand it), no `||`/`&&`, no `#` (a comment).
 */
export function scriptSafe(text: string): string {
  return text
    .replace(/[\x00-\x1f\x7f]+/g, ' ')
    .replace(/\$\{/g, '$ {')
    .replace(/\|\||&&|#/g, ' ')
    .replace(/ {2,}/g, ' ')
    .trim();
}
