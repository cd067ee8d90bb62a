#!/usr/bin/env bash
# `make pxe`: copy the iPXE first-stage binaries from Debian's `ipxe` package into pxe/bin/
# (git-ignored). The dispatcher serves them over TFTP (and HTTP for UEFI HTTP boot clients):
#   undionly.kpxe  BIOS PXE ROMs (chain-loads through the ROM's UNDI driver)
#   ipxe.efi       x86-64 UEFI, iPXE's own NIC drivers with SNP fallback
#   snponly.efi    x86-64 UEFI, firmware SNP driver only (NICs iPXE has no driver for)
# IPXE_DIR overrides the source folder (default /usr/lib/ipxe); DEST the target (default pxe/bin).
set -euo pipefail
cd "$(dirname "$0")/.."

SRC=${IPXE_DIR:-/usr/lib/ipxe}
DEST=${DEST:-pxe/bin}
FILES=(undionly.kpxe ipxe.efi snponly.efi)

missing=()
for f in "${FILES[@]}"; do
  # ipxe.efi is a symlink into /boot in Debian's package: test what it points to.
  [ -f "$SRC/$f" ] && [ -s "$SRC/$f" ] || missing+=("$f")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "make pxe: missing in $SRC: ${missing[*]}" >&2
  echo "  install Debian's iPXE binaries:  apt-get install ipxe   (or set IPXE_DIR to a folder holding them)" >&2
  exit 1
fi

mkdir -p "$DEST"
for f in "${FILES[@]}"; do
  # -L: copy the file, not the symlink; write to a temp name and rename so a running
  # dispatcher never reads a half-copied binary.
  cp -L "$SRC/$f" "$DEST/.$f.tmp"
  mv -f "$DEST/.$f.tmp" "$DEST/$f"
done
for f in "${FILES[@]}"; do
  printf '  %-14s %8d bytes  sha256 %s\n' "$f" "$(stat -c %s "$DEST/$f")" "$(sha256sum "$DEST/$f" | cut -c1-16)"
done
echo "make pxe: iPXE first stages in $DEST"
