/**
 * RAM-image figures (`make bench-image`): the compressed initrd's size, and under QEMU TCG
 * (direct kernel boot, user-mode network) the time from kernel start to the agent's first
 * request and the memory the node uses once the agent runs. Medians of several boots.
 *
 *   BOOTS=5 MEMORY_MIB=1024 node dist/bench/image.mjs
 *
 * Kernel start is seen from the host: for every console line, host arrival time minus the
 * kernel's printk timestamp is an upper bound of the host time the kernel's clock started;
 * the smallest of them (a line printed live, not replayed from the log buffer) is taken.
 * Memory is the line /init prints 15 s after the agent starts: MemTotal − MemAvailable.
 * An image with its own root (root.cpio beside initrd.img) boots with both, root.cpio first, as
 * the boot script loads them: `IMAGE_OUT=dist/images/numpy make bench-image`.
 *
 * Prints `RESULT name=... key=value ...` lines.
 */
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { QemuMachine, type ConsoleLine } from '../test/lab/qemu.js';
import type { ImageManifest } from '../image/src/manifest.js';

const IMAGE = process.env.IMAGE_OUT ?? 'dist/image';
const ROOT_CPIO = `${IMAGE}/root.cpio`;
/** QEMU takes one initrd file: an image's root.cpio and the base initrd, concatenated in boot order. */
const INITRD = existsSync(ROOT_CPIO) ? 'test/artifacts/bench-image-initrds.img' : `${IMAGE}/initrd.img`;
const BOOTS = Number(process.env.BOOTS ?? 5);
const MEMORY_MIB = Number(process.env.MEMORY_MIB ?? 1024);
const BOOT_TIMEOUT_MS = 180_000;
const SIZE_LIMIT_MIB = 32;
const FIRST_REQUEST_TARGET_S = 10;
const MEMORY_TARGET_MIB = 192;
/** The consoles the dispatcher's boot script asks for. */
const CONSOLES = 'console=tty0 console=ttyS0,115200';

const mib = (bytes: number) => bytes / 1048576;
const fixed = (n: number, d = 2) => n.toFixed(d);
function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}
function result(name: string, fields: Record<string, string | number | boolean>): void {
  console.log(
    `RESULT name=${name} ${Object.entries(fields)
      .map(([k, v]) => `${k}=${v}`)
      .join(' ')}`,
  );
}

/** Host time (ms) the guest kernel's clock read 0, from console lines with printk timestamps. */
export function kernelStartHostMs(lines: readonly ConsoleLine[]): number | undefined {
  let best: number | undefined;
  for (const l of lines) {
    const m = /^\[\s*(\d+\.\d+)\]/.exec(l.text);
    if (!m) continue;
    const start = l.at - Number(m[1]) * 1000;
    if (best === undefined || start < best) best = start;
  }
  return best;
}

/** "(uptime 5.19 s)" on the first /init line matching `what`. */
function uptimeAt(console: string, what: RegExp): number | undefined {
  for (const line of console.split('\n')) if (what.test(line)) return Number(/uptime ([\d.]+) s\)/.exec(line)?.[1] ?? NaN);
  return undefined;
}

interface Boot {
  kernelToRequestS: number;
  qemuToRequestS: number;
  initS: number | undefined;
  networkS: number | undefined;
  agentS: number | undefined;
  memory: Record<string, number>;
}

async function bootOnce(run: number, manifest: ImageManifest): Promise<Boot> {
  let firstRequestAt: number | undefined;
  let firstRequest: IncomingMessage | undefined;
  const seen = (req: IncomingMessage) => {
    if (firstRequestAt === undefined && req.url?.startsWith('/api/v1/agent')) {
      firstRequestAt = Date.now();
      firstRequest = req;
    }
  };
  const server = createServer((req, res) => {
    seen(req);
    res.writeHead(503).end();
  });
  server.on('upgrade', (req, socket) => {
    seen(req);
    socket.end('HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  mkdirSync('test/artifacts', { recursive: true });
  const vm = await QemuMachine.start({
    exitOnReboot: true,
    name: `bench-image-${run}`,
    boot: {
      kind: 'kernel',
      kernel: `${IMAGE}/vmlinuz`,
      initrd: INITRD,
      append: `${CONSOLES} lc.dispatcher=http://10.0.2.2:${port} lc.token=bench-${run}`,
    },
    nics: [{ net: { kind: 'user' } }],
    memoryMiB: MEMORY_MIB,
    consoleLog: `test/artifacts/bench-image-${run}.console.log`,
  });
  try {
    const memoryLine = await vm.waitForConsole(/lc-init: memory (used_kib=.*)/, BOOT_TIMEOUT_MS);
    if (firstRequestAt === undefined)
      throw new Error(`boot ${run}: the agent made no request under /api/v1/agent; console ends:\n${vm.tail()}`);
    const kernelStart = kernelStartHostMs(vm.consoleLines());
    if (kernelStart === undefined) throw new Error(`boot ${run}: no timestamped kernel line on the console`);
    const memory = Object.fromEntries(
      memoryLine[1]!
        .split(/\s+/)
        .map((kv) => kv.split('=') as [string, string])
        .map(([k, v]) => [k, Number(v)]),
    );
    const console = vm.console();
    const ua = firstRequest?.headers['user-agent'] ?? '';
    if (run === 1)
      result('image-agent-request', { path: firstRequest?.url ?? '?', user_agent: JSON.stringify(ua), kernel: manifest.kernel.version });
    return {
      kernelToRequestS: (firstRequestAt - kernelStart) / 1000,
      qemuToRequestS: (firstRequestAt - vm.startedAt) / 1000,
      initS: uptimeAt(console, /lc-init: lilcluster node image/),
      networkS: uptimeAt(console, /lc-init: network: /),
      agentS: uptimeAt(console, /lc-init: starting node-agent/),
      memory,
    };
  } finally {
    await vm.stop();
    server.close();
  }
}

async function main(): Promise<void> {
  const manifest = JSON.parse(readFileSync(`${IMAGE}/manifest.json`, 'utf8')) as ImageManifest;
  if (INITRD !== `${IMAGE}/initrd.img`) {
    mkdirSync('test/artifacts', { recursive: true });
    writeFileSync(INITRD, Buffer.concat([readFileSync(ROOT_CPIO), readFileSync(`${IMAGE}/initrd.img`)]));
  }
  const initrd = manifest.files['initrd.img'];
  result('image-size', {
    initrd_mib: fixed(mib(initrd.size)),
    initrd_bytes: initrd.size,
    limit_mib: SIZE_LIMIT_MIB,
    ok: mib(initrd.size) <= SIZE_LIMIT_MIB,
    uncompressed_mib: fixed(mib(initrd.uncompressedSize)),
    vmlinuz_mib: fixed(mib(manifest.files.vmlinuz.size)),
    zstd_level: manifest.compression.level,
    modules: manifest.modules.shipped.length,
    node_mib: fixed(mib(manifest.node.size)),
  });
  if (manifest.root)
    result('image-root', {
      image: manifest.root.image,
      root_cpio_mib: fixed(mib(manifest.root.size)),
      unpacked_mib: fixed(mib(manifest.root.unpackedBytes)),
      download_per_boot_mib: fixed(mib(manifest.root.size + initrd.size + manifest.files.vmlinuz.size)),
    });

  const boots: Boot[] = [];
  for (let run = 1; run <= BOOTS; run++) {
    const b = await bootOnce(run, manifest);
    boots.push(b);
    result('image-boot', {
      run,
      kernel_to_request_s: fixed(b.kernelToRequestS),
      qemu_to_request_s: fixed(b.qemuToRequestS),
      init_uptime_s: b.initS ?? '?',
      network_uptime_s: b.networkS ?? '?',
      agent_start_uptime_s: b.agentS ?? '?',
      agent_to_request_s: b.agentS === undefined ? '?' : fixed(b.kernelToRequestS - b.agentS),
      memory_used_mib: fixed(b.memory.used_kib! / 1024, 1),
    });
    await sleep(500);
  }
  const med = (f: (b: Boot) => number | undefined) =>
    median(boots.map(f).filter((x): x is number => x !== undefined && Number.isFinite(x)));
  const firstRequest = med((b) => b.kernelToRequestS);
  result('image-first-request', {
    median_s: fixed(firstRequest),
    min_s: fixed(Math.min(...boots.map((b) => b.kernelToRequestS))),
    max_s: fixed(Math.max(...boots.map((b) => b.kernelToRequestS))),
    target_s: FIRST_REQUEST_TARGET_S,
    ok: firstRequest <= FIRST_REQUEST_TARGET_S,
    qemu_to_request_median_s: fixed(med((b) => b.qemuToRequestS)),
    init_median_s: fixed(med((b) => b.initS)),
    network_median_s: fixed(med((b) => b.networkS)),
    agent_start_median_s: fixed(med((b) => b.agentS)),
    agent_to_request_median_s: fixed(med((b) => (b.agentS === undefined ? undefined : b.kernelToRequestS - b.agentS))),
    boots: boots.length,
    accel: 'tcg',
  });
  const memUsed = med((b) => b.memory.used_kib! / 1024);
  result('image-memory', {
    used_median_mib: fixed(memUsed, 1),
    target_mib: MEMORY_TARGET_MIB,
    ok: memUsed <= MEMORY_TARGET_MIB,
    shmem_median_mib: fixed(
      med((b) => b.memory.shmem_kib! / 1024),
      1,
    ),
    anon_median_mib: fixed(
      med((b) => b.memory.anon_kib! / 1024),
      1,
    ),
    slab_median_mib: fixed(
      med((b) => b.memory.slab_kib! / 1024),
      1,
    ),
    total_mib: fixed(
      med((b) => b.memory.total_kib! / 1024),
      1,
    ),
    vm_mib: MEMORY_MIB,
    boots: boots.length,
  });
}

main().catch((err: unknown) => {
  console.error(`bench-image: ${(err as Error).message}`);
  process.exit(1);
});
