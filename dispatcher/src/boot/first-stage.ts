/**
 * Which first stage a network-booting machine gets: a pure decision on what its DHCP request
 * says (architecture, vendor class, iPXE or not) and the node's own setting. The DHCP server
 * (full and proxy modes) only calls this; the boot chain it describes is in pxe/README.md.
 *
 *   firmware PXE, BIOS (arch 0)          → undionly.kpxe over TFTP
 *   firmware PXE, x86-64 UEFI (7, 9)      → ipxe.efi over TFTP (snponly.efi if the node asks)
 *   UEFI HTTP boot (HTTPClient, arch 16)  → the same binary as http://<dispatcher>:<port>/pxe/<file>
 *   iPXE (user class "iPXE" or opt. 175)  → http://<dispatcher>:<port>/boot.ipxe?mac=${net0/mac}
 *   anything else asking to boot          → unsupported: logged, not answered
 */
import type { FirstStage } from '../nodes/cluster-file.js';
import { ARCH, VENDOR_HTTP_CLIENT, VENDOR_PXE_CLIENT } from '../dhcp/options.js';

export const BIOS_FIRST_STAGE = 'undionly.kpxe';
export const UEFI_FIRST_STAGE: FirstStage = 'ipxe.efi';
export type FirstStageFile = typeof BIOS_FIRST_STAGE | FirstStage;

/** What the DHCP request tells about the client. */
export interface BootClient {
  /** Option 93 (first entry). */
  clientArch?: number | undefined;
  /** Option 60. */
  vendorClass?: string | undefined;
  /** User class "iPXE" or option 175 present. */
  isIPXE: boolean;
}

/** Where boot files are served. */
export interface BootSite {
  /** The dispatcher's address as nodes reach it. */
  address: string;
  httpPort: number;
}

export type FirstStageDecision =
  /** Not a network-boot request (an OS's DHCP client): address only. */
  | { kind: 'none' }
  /** Firmware PXE: fetch `file` by TFTP from next-server. */
  | { kind: 'tftp'; file: FirstStageFile }
  /** UEFI HTTP boot: fetch `url`; the reply must echo `HTTPClient` in option 60 (UEFI spec, HTTP Boot). */
  | { kind: 'http'; file: FirstStageFile; url: string }
  /** Already iPXE: chain to the boot script. */
  | { kind: 'script'; url: string }
  /** A boot request we have nothing for; not answered. */
  | { kind: 'unsupported'; arch: number | undefined; reason: string };

const UEFI_X64_ARCHES: ReadonlySet<number> = new Set([ARCH.EFI_X64, ARCH.EFI_BC]);

/** The script URL iPXE gets. iPXE expands `${net0/mac}` in the filename before fetching it. */
export function bootScriptUrl(site: BootSite): string {
  return `http://${site.address}:${site.httpPort}/boot.ipxe?mac=\${net0/mac}`;
}

export function firstStageUrl(site: BootSite, file: FirstStageFile): string {
  return `http://${site.address}:${site.httpPort}/pxe/${file}`;
}

/** `PXEClient...` or `HTTPClient...` in option 60, or iPXE: the client wants to boot from us. */
export function wantsNetworkBoot(c: BootClient): boolean {
  return c.isIPXE || startsWith(c.vendorClass, VENDOR_PXE_CLIENT) || startsWith(c.vendorClass, VENDOR_HTTP_CLIENT);
}

/**
 * The client's architecture: option 93, else the one in its vendor class
 * (`PXEClient:Arch:00007:UNDI:003016`, PXE 2.1 §2.4) for old ROMs that omit option 93.
 */
export function clientArchOf(c: Pick<BootClient, 'clientArch' | 'vendorClass'>): number | undefined {
  if (c.clientArch !== undefined) return c.clientArch;
  const m = /^(?:PXEClient|HTTPClient):Arch:(\d{5})/.exec(c.vendorClass ?? '');
  return m ? Number(m[1]) : undefined;
}

export function chooseFirstStage(c: BootClient, node: { firstStage: FirstStage | null } | undefined, site: BootSite): FirstStageDecision {
  if (!wantsNetworkBoot(c)) return { kind: 'none' };
  const arch = clientArchOf(c);
  const uefiFile: FirstStageFile = node?.firstStage ?? UEFI_FIRST_STAGE;

  if (c.isIPXE) {
    // iPXE on a machine we have an image for: chain to the boot script. Unknown arch is fine
    // (a hand-built iPXE may omit option 93); a known non-x86 one is not.
    if (arch === undefined || arch === ARCH.X86_BIOS || UEFI_X64_ARCHES.has(arch) || arch === ARCH.EFI_X64_HTTP)
      return { kind: 'script', url: bootScriptUrl(site) };
    return unsupported(arch);
  }
  if (arch === ARCH.EFI_X64_HTTP || (startsWith(c.vendorClass, VENDOR_HTTP_CLIENT) && arch !== undefined && UEFI_X64_ARCHES.has(arch)))
    return { kind: 'http', file: uefiFile, url: firstStageUrl(site, uefiFile) };
  if (startsWith(c.vendorClass, VENDOR_HTTP_CLIENT)) return unsupported(arch);
  if (arch === ARCH.X86_BIOS) return { kind: 'tftp', file: BIOS_FIRST_STAGE };
  if (arch !== undefined && UEFI_X64_ARCHES.has(arch)) return { kind: 'tftp', file: uefiFile };
  return unsupported(arch);
}

function unsupported(arch: number | undefined): FirstStageDecision {
  if (arch === undefined) return { kind: 'unsupported', arch, reason: 'no client architecture (option 93) in the boot request' };
  return {
    kind: 'unsupported',
    arch,
    reason: `client architecture ${arch} (${archName(arch)}) has no first stage: only x86 BIOS and x86-64 UEFI boot the image`,
  };
}

/** Human name of an option 93 value, for log lines. */
export function archName(arch: number): string {
  switch (arch) {
    case ARCH.X86_BIOS:
      return 'x86 BIOS';
    case ARCH.EFI_IA32:
      return '32-bit x86 UEFI';
    case ARCH.EFI_X64:
      return 'x86-64 UEFI';
    case ARCH.EFI_BC:
      return 'x86-64 UEFI (EFI BC)';
    case ARCH.EFI_ARM32:
      return '32-bit ARM UEFI';
    case ARCH.EFI_ARM64:
      return 'arm64 UEFI';
    case ARCH.EFI_IA32_HTTP:
      return '32-bit x86 UEFI HTTP boot';
    case ARCH.EFI_X64_HTTP:
      return 'x86-64 UEFI HTTP boot';
    case ARCH.EFI_ARM64_HTTP:
      return 'arm64 UEFI HTTP boot';
    default:
      return 'unknown';
  }
}

function startsWith(s: string | undefined, prefix: string): boolean {
  return s?.startsWith(prefix) === true;
}
