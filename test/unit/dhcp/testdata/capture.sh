#!/usr/bin/env bash
# Captures the DHCP packets of real clients into golden files (*.hex: one UDP payload in hex).
# Run as root from the repository root after `make build pxe`:  bash test/unit/dhcp/testdata/capture.sh
# It serves full-mode DHCP from the dispatcher on a bridge in a namespace and records, with
# tshark, what these clients send and what the dispatcher answers:
#   seabios-ipxe-*  QEMU SeaBIOS with the iPXE option ROM of a virtio NIC (iPXE is the firmware)
#   ovmf-*          QEMU OVMF, NIC without option ROM: EDK2's own PXE client, then the ipxe.efi it chain-loads
#   udhcpc-*        busybox udhcpc (Debian udhcpc), as the Linux of the RAM image
set -euo pipefail
cd "$(dirname "$0")/../../../.."
OUT=test/unit/dhcp/testdata
NS=lc-dhcpcap-$$-1
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  ip netns del "$NS" 2>/dev/null || true
  ip netns del "$NS-cli" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add br0 type bridge forward_delay 0 stp_state 0
ip -n "$NS" addr add 10.99.0.1/24 dev br0
ip -n "$NS" link set br0 up
for t in tap0 tap1; do
  ip -n "$NS" tuntap add dev $t mode tap
  ip -n "$NS" link set $t master br0
  ip -n "$NS" link set $t up
done
ip netns add "$NS-cli"
ip -n "$NS" link add vcap type veth peer name c0 netns "$NS-cli"
ip -n "$NS" link set vcap master br0
ip -n "$NS" link set vcap up
ip -n "$NS-cli" link set c0 address 02:00:00:99:00:03 up

ip netns exec "$NS" node dist/bin/dispatcher.mjs --interface br0 --dhcp full --data-dir "$WORK/data" \
  --http-port 8080 --log-level info >"$WORK/dispatcher.log" 2>&1 & PIDS+=($!)
ip netns exec "$NS" tshark -q -i br0 -f 'udp port 67 or udp port 68' -w "$WORK/cap.pcapng" 2>/dev/null & PIDS+=($!)
sleep 3

# Waits until the dispatcher has ACKed `mac` `n` times (or the timeout passes).
wait_acks() { # mac n seconds
  for _ in $(seq "$3"); do
    [ "$(grep -c "\"mac\":\"$1\".*\"msg\":\"ack\"" "$WORK/dispatcher.log" || true)" -ge "$2" ] && return 0
    sleep 1
  done
}

# SeaBIOS + iPXE ROM: the ROM's DHCP (DISCOVER, REQUEST); iPXE then fetches the boot script.
ip netns exec "$NS" qemu-system-x86_64 -accel tcg -m 256 -nographic -no-reboot \
  -netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device virtio-net-pci,netdev=n0,mac=52:54:00:99:00:01,bootindex=1 \
  -serial null -monitor none >/dev/null 2>&1 & Q=$!; PIDS+=($Q)
wait_acks 52:54:00:99:00:01 1 60; sleep 1; kill $Q || true

# OVMF native PXE (no option ROM), then iPXE EFI after the TFTP of ipxe.efi.
cp /usr/share/OVMF/OVMF_VARS_4M.fd "$WORK/vars.fd"
ip netns exec "$NS" qemu-system-x86_64 -accel tcg -m 512 -nographic -no-reboot -machine q35 \
  -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd -drive if=pflash,format=raw,file="$WORK/vars.fd" \
  -netdev tap,id=n0,ifname=tap1,script=no,downscript=no -device virtio-net-pci,netdev=n0,mac=52:54:00:99:00:02,romfile=,bootindex=1 \
  -serial null -monitor none >/dev/null 2>&1 & Q=$!; PIDS+=($Q)
wait_acks 52:54:00:99:00:02 2 240; sleep 1; kill $Q || true

# udhcpc: DISCOVER/REQUEST, a renewal (SIGUSR1), and a RELEASE on exit (-R).
ip netns exec "$NS-cli" udhcpc -i c0 -f -R -s /bin/true -x hostname:capture >/dev/null 2>&1 & U=$!; PIDS+=($U)
sleep 3; kill -USR1 $U; sleep 2; kill -TERM $U; sleep 1
kill "${PIDS[1]}"; sleep 1

tshark -r "$WORK/cap.pcapng" -Y dhcp -T fields -e udp.srcport -e udp.payload 2>/dev/null >"$WORK/packets.tsv"
rm -f "$OUT"/*.hex
node -e '
const fs = require("fs");
const [tsv, out] = process.argv.slice(1);
const names = { "52:54:00:99:00:01": "seabios-ipxe", "52:54:00:99:00:02": "ovmf", "02:00:00:99:00:03": "udhcpc" };
const types = { 1: "discover", 2: "offer", 3: "request", 5: "ack", 6: "nak", 7: "release", 8: "inform" };
function options(b) { const o = new Map(); for (let i = 240; i < b.length && b[i] !== 255; ) { if (b[i] === 0) { i++; continue; } o.set(b[i], b.subarray(i + 2, i + 2 + b[i + 1])); i += 2 + b[i + 1]; } return o; }
const seen = new Set();
let ovmfIpxe = false;
for (const line of fs.readFileSync(tsv, "utf8").trim().split("\n")) {
  const [sport, hex] = line.split("\t");
  const b = Buffer.from(hex, "hex");
  const chaddr = hex.slice(56, 68).match(/../g).join(":");
  let who = names[chaddr]; if (!who) continue;
  const o = options(b);
  const type = types[o.get(53)?.[0]] ?? "bootp";
  if (who === "ovmf" && sport === "68" && o.has(175)) ovmfIpxe = true;
  if (who === "ovmf" && ovmfIpxe) who = "ovmf-ipxe";
  const renew = type === "request" && hex.slice(24, 32) !== "00000000";
  const name = `${who}-${renew ? "renew" : type}`;
  if (seen.has(name)) continue;
  seen.add(name);
  fs.writeFileSync(`${out}/${name}.hex`, hex + "\n");
  console.log(name, b.length, "bytes", (o.get(60) ?? "").toString(), (o.get(77) ?? "").toString());
}' "$WORK/packets.tsv" "$OUT"
