/**
 * A simulated diskless machine for operator tests on one host: it "PXE-boots" by fetching
 * its boot script (GET /boot.ipxe?mac=..., which counts a boot and issues a fresh per-boot
 * token, as iPXE would), then runs the real node agent (dist/bin/node-agent.mjs) with that
 * token. When the agent obeys `reboot`, the machine boots again (new boot script, new token,
 * fresh work dir: RAM is wiped); after `poweroff` it stays off until `powerOn()`.
 *
 * The agent's real power path runs (`--allow-power`: SystemPower spawns `reboot -f`), made
 * harmless three ways: each boot runs in its own PID and mount namespace (unshare), where
 * `reboot`/`poweroff` are bind-mounted over by a script that records the request and kills
 * every process of the namespace (kill -9 -1: what a reboot does to them), the fake bin dir
 * comes first in PATH, and /proc/sysrq-trigger (the agent's fallback) is /dev/null there.
 * reboot(2) from a non-initial PID namespace only ends that namespace anyway. Needs root.
 *
 * With `images: true` the machine boots the way the dispatcher's images boot (issue 13): the
 * kernel command line of its boot script becomes the agent's /proc/cmdline (so the hello names
 * the image, and reboots carry kexec plans), and a reboot by kexec boots the planned command
 * line without fetching a boot script. The agent runs the real kexec path — download, sha256
 * check, `/usr/sbin/kexec -a -l`, `kexec -e` — against a fake kexec. The host's kexec is REAL
 * (it would replace this machine's kernel), so the fake is bind-mounted over it inside the
 * namespace first, checked to be the fake (same bytes, probe answers), and only then is the
 * command line bound: any failure stops the boot before the agent starts (`set -e`).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AGENT_BIN } from './paths.js';

const FAKE_POWER = `#!/bin/sh
# Fake reboot/poweroff for simulated machines (see machine.ts).
if [ "$1" = "--lc-fake-probe" ]; then echo lc-fake-power; exit 0; fi
echo "$(basename "$0")" > "$LC_POWER_FILE"
kill -KILL -1
exit 0
`;

/**
 * Fake kexec (bound over /usr/sbin/kexec inside the namespace). `-l` records what it was asked
 * to load — the argv, the command line and the sha256 of the files the agent fetched — in
 * LC_KEXEC_FILE (or fails: LC_FAKE_KEXEC_FAIL=1, or failKexec); `-e` jumps: it records `kexec` as the
 * power request and kills every process, as the real jump ends them; `-u` forgets the load.
 */
const FAKE_KEXEC = `#!/bin/sh
# Fake kexec for simulated machines (see simulated-machine.ts): the real one would replace the host's kernel.
if [ "$1" = "--lc-fake-probe" ]; then echo lc-fake-kexec; exit 0; fi
load=; jump=; kernel=; initrd=; cmdline=
for a in "$@"; do
  case "$a" in
    -l) load=1 ;;
    -e) jump=1 ;;
    -u) rm -f "$LC_KEXEC_FILE"; exit 0 ;;
    --initrd=*) initrd="\${a#--initrd=}" ;;
    --command-line=*) cmdline="\${a#--command-line=}" ;;
    -*) ;;
    *) kernel="$a" ;;
  esac
done
if [ -n "$jump" ]; then
  [ -s "$LC_KEXEC_FILE" ] || { echo "kexec: nothing has been loaded" >&2; exit 1; }
  echo kexec > "$LC_POWER_FILE"
  kill -KILL -1
  exit 0
fi
[ -n "$load" ] || { echo "fake kexec: unexpected arguments: $*" >&2; exit 2; }
if [ "$LC_FAKE_KEXEC_FAIL" = 1 ] || [ -e "$LC_KEXEC_FILE.fail" ]; then echo "kexec_load failed: Operation not permitted (LC_FAKE_KEXEC_FAIL)" >&2; exit 1; fi
[ -f "$kernel" ] && [ -f "$initrd" ] || { echo "kexec: cannot read $kernel or $initrd" >&2; exit 1; }
{
  printf 'argv %s\\n' "$*"
  printf 'cmdline %s\\n' "$cmdline"
  printf 'kernel %s\\n' "$(sha256sum < "$kernel" | cut -d' ' -f1)"
  printf 'initrd %s\\n' "$(sha256sum < "$initrd" | cut -d' ' -f1)"
} > "$LC_KEXEC_FILE.tmp"
mv "$LC_KEXEC_FILE.tmp" "$LC_KEXEC_FILE"
exit 0
`;

/** The machine's task root (rootHealth): a mount point inside the namespace, an empty dir outside. */
const TASK_ROOT_DIR = 'root';

/** Exit status of the namespace's setup when /usr/sbin/kexec could not be made the fake. */
const UNSAFE_EXIT = 97;

/** What the fake kexec recorded of the last `kexec -l`. */
export interface KexecLoad {
  argv: string;
  cmdline: string;
  /** sha256 of the kernel and of the (combined) initrd the agent fetched and handed to kexec. */
  kernel: string;
  initrd: string;
}

export interface MachineOptions {
  dispatcherUrl: string;
  /** Where the boot script comes from, when not the dispatcher URL (tests that split services). */
  bootUrl?: string;
  mac: string;
  /** The dispatcher's identity.pub (the agent verifies the dispatcher with it). */
  pubKeyFile: string;
  slots?: number;
  /** Delay between the "reboot" and the next boot (firmware, POST). */
  postMs?: number;
  /** Extra environment for the agent. */
  env?: Record<string, string>;
  /** The agent bundle (default dist/bin/node-agent.mjs of this tree). */
  agentBin?: string;
  /**
   * Boot like a node of the dispatcher's images: the boot script's kernel command line is the
   * agent's /proc/cmdline, and reboots by kexec (fake kexec, see the header). Default off.
   */
  images?: boolean;
  /**
   * With `images`: the image's health check for a boot of `name@version` (what /init would pass
   * as LC_ROOT_HEALTH from the image's root), or undefined for an image without a root. The
   * task root is then the host's / bound at a path of the machine's (the same files at the
   * same paths, so the agent's checks hold), and the agent runs the check in it for real.
   */
  rootHealth?: (image: string) => string | undefined;
  /** The fake kexec's script (default FAKE_KEXEC): tests of the machine's own safety check give a broken one. */
  fakeKexec?: string;
}

export class SimulatedMachine {
  readonly mac: string;
  /** Boots so far (boot scripts fetched). */
  boots = 0;
  /** Boots by kexec so far (no boot script: the planned command line). */
  kexecBoots = 0;
  /** What the fake kexec loaded before each jump, oldest first. */
  readonly kexecLoads: KexecLoad[] = [];
  /** The agent's output of the current boot. */
  output = '';
  state: 'off' | 'booting' | 'running' = 'off';
  readonly #opts: MachineOptions;
  readonly #dir: string;
  readonly #fakeBin: string;
  readonly #powerFile: string;
  readonly #kexecFile: string;
  readonly #cmdlineFile: string;
  #child: ChildProcess | undefined;
  #wanted = false;
  #loop: Promise<void> | undefined;
  readonly history: string[] = [];

  constructor(opts: MachineOptions) {
    this.#opts = opts;
    this.mac = opts.mac;
    this.#dir = mkdtempSync(join(tmpdir(), `lc-op-machine-${opts.mac.replaceAll(':', '')}-`));
    this.#fakeBin = join(this.#dir, 'bin');
    mkdirSync(this.#fakeBin);
    for (const name of ['reboot', 'poweroff', 'halt']) writeFileSync(join(this.#fakeBin, name), FAKE_POWER, { mode: 0o755 });
    writeFileSync(join(this.#fakeBin, 'kexec'), opts.fakeKexec ?? FAKE_KEXEC, { mode: 0o755 });
    this.#powerFile = join(this.#dir, 'power-request');
    this.#kexecFile = join(this.#dir, 'kexec-load');
    this.#cmdlineFile = join(this.#dir, 'cmdline');
    // Refuse to start anything if the fake would not be the `reboot` the agent runs.
    const probe = spawnSync('reboot', ['--lc-fake-probe'], { env: this.#env(), encoding: 'utf8' });
    if (probe.stdout.trim() !== 'lc-fake-power')
      throw new Error(`the fake reboot is not first in PATH (${probe.stdout} ${probe.stderr}): not starting agents with --allow-power`);
  }

  /** Powers the machine on: it boots, and boots again after each reboot, until poweroff or stop(). */
  powerOn(): void {
    if (this.#loop) return;
    this.#wanted = true;
    this.#loop = this.#run().finally(() => (this.#loop = undefined));
  }

  /** Pulls the plug (test teardown, or a crash): no shutdown, no reboot after. */
  async stop(): Promise<void> {
    this.#wanted = false;
    this.#child?.kill('SIGKILL');
    await this.#loop;
  }

  /** Whether the fake kexec's `-l` fails (the agent then reboots by the firmware); takes effect at once. */
  set failKexec(on: boolean) {
    if (on) writeFileSync(`${this.#kexecFile}.fail`, '');
    else rmSync(`${this.#kexecFile}.fail`, { force: true });
  }

  get failKexec(): boolean {
    return existsSync(`${this.#kexecFile}.fail`);
  }

  cleanup(): void {
    // The task root is the host's / bound there inside the namespace only; should it ever be
    // bound here too, rmdir fails on it (busy, not empty) instead of deleting through it.
    const root = join(this.#dir, TASK_ROOT_DIR);
    if (existsSync(root)) rmdirSync(root);
    rmSync(this.#dir, { recursive: true, force: true });
  }

  async #run(): Promise<void> {
    /** Set after a jump by kexec: the command line the fake kexec loaded (no boot script then). */
    let kexecCmdline: string | undefined;
    while (this.#wanted) {
      this.state = 'booting';
      let token: string;
      let cmdline: string | undefined;
      if (kexecCmdline !== undefined) {
        cmdline = kexecCmdline;
        kexecCmdline = undefined;
        const m = /(?:^|\s)lc\.token=(\S+)/.exec(cmdline);
        if (!m) {
          this.output += `kexec: no lc.token on the loaded command line: ${cmdline}\n`;
          this.history.push('kexec-failed');
          break;
        }
        token = m[1]!;
        this.kexecBoots++;
      } else {
        try {
          const script = await this.#pxe();
          token = script.token;
          if (this.#opts.images) cmdline = kernelArgsOf(script.text);
        } catch (err) {
          this.output += `PXE failed: ${(err as Error).message}\n`;
          this.history.push('pxe-failed');
          break;
        }
      }
      if (!this.#wanted) break;
      const work = join(this.#dir, `ram-${this.boots + this.kexecBoots}`);
      mkdirSync(work, { recursive: true });
      rmSync(this.#powerFile, { force: true });
      rmSync(this.#kexecFile, { force: true });
      const bootEnv: Record<string, string> = {};
      if (cmdline !== undefined) {
        writeFileSync(this.#cmdlineFile, `${cmdline}\n`);
        Object.assign(bootEnv, { LC_SIM_CMDLINE: this.#cmdlineFile }, this.#taskRootEnv(cmdline));
      }
      const agentArgs = [
        this.#opts.agentBin ?? AGENT_BIN,
        '--dispatcher',
        this.#opts.dispatcherUrl,
        '--token',
        token,
        '--mac',
        this.mac,
        '--dispatcher-key',
        this.#opts.pubKeyFile,
        '--work-dir',
        work,
        '--slots',
        String(this.#opts.slots ?? 2),
        '--allow-power',
      ];
      // In a PID + mount namespace: the fake power commands are bind-mounted over the real ones there.
      // --kill-child: when unshare dies (stop()), the namespace's init dies, and with it every process in it.
      // /usr/sbin/kexec is made the fake and proven to be it (same bytes, its probe answers) before
      // anything else, or nothing starts: with a command line naming an image (images), kexec plans come.
      // /run is the node's RAM (the agent fetches kexec files into /run/lilcluster): each machine its own.
      const setup = [
        'set -e',
        'for c in reboot poweroff halt; do p=$(command -v "$c" 2>/dev/null || true); if [ -n "$p" ]; then mount --bind "$FAKE_BIN/$c" "$(readlink -f "$p")"; fi; done',
        '[ -e /proc/sysrq-trigger ] && mount --bind /dev/null /proc/sysrq-trigger || true',
        'k=/usr/sbin/kexec',
        'if [ -e "$k" ] || [ -L "$k" ]; then',
        '  mount --bind "$FAKE_BIN/kexec" "$(readlink -f "$k")"',
        `  cmp -s "$FAKE_BIN/kexec" "$k" || { echo "machine: $k is not the fake kexec: not starting the agent" >&2; exit ${UNSAFE_EXIT}; }`,
        `  [ "$("$k" --lc-fake-probe)" = lc-fake-kexec ] || { echo "machine: $k does not answer as the fake kexec: not starting the agent" >&2; exit ${UNSAFE_EXIT}; }`,
        'fi',
        'if [ -n "${LC_SIM_CMDLINE:-}" ]; then',
        '  mount -t tmpfs -o size=64m,mode=0755 lc-ram /run',
        '  mount --bind "$LC_SIM_CMDLINE" /proc/cmdline',
        '  cmp -s "$LC_SIM_CMDLINE" /proc/cmdline',
        'fi',
        'if [ -n "${LC_TASK_ROOT:-}" ]; then mkdir -p "$LC_TASK_ROOT"; mount --rbind / "$LC_TASK_ROOT"; fi',
        '"$@" & wait $! || true',
      ].join('\n');
      this.output = '';
      this.state = 'running';
      const child = spawn(
        'unshare',
        [
          '--pid',
          '--fork',
          '--kill-child',
          '--mount',
          '--propagation',
          'private',
          '--mount-proc',
          'sh',
          '-c',
          setup,
          'machine',
          process.execPath,
          ...agentArgs,
        ],
        {
          env: { ...this.#env(), FAKE_BIN: this.#fakeBin, ...bootEnv },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      this.#child = child;
      child.stdout!.setEncoding('utf8').on('data', (d: string) => (this.output += d));
      child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.output += d));
      const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
      this.#child = undefined;
      const request = existsSync(this.#powerFile) ? readFileSync(this.#powerFile, 'utf8').trim() : '';
      rmSync(work, { recursive: true, force: true }); // RAM is gone
      if (!request && code === UNSAFE_EXIT) {
        this.history.push('unsafe');
        break;
      }
      this.history.push(request || 'exit');
      if (request === 'kexec') {
        const load = readKexecLoad(this.#kexecFile);
        if (!load) {
          this.output += 'kexec -e ran with no load recorded\n';
          this.history.push('kexec-failed');
          break;
        }
        this.kexecLoads.push(load);
        kexecCmdline = load.cmdline;
        continue;
      }
      if (request !== 'reboot') break;
      await new Promise((r) => setTimeout(r, this.#opts.postMs ?? 100));
    }
    this.state = 'off';
  }

  /** What iPXE does first: fetch the boot script; the dispatcher counts a boot and issues a token. */
  async #pxe(): Promise<{ token: string; text: string }> {
    for (let attempt = 0; ; attempt++) {
      try {
        const res = await fetch(`${this.#opts.bootUrl ?? this.#opts.dispatcherUrl}/boot.ipxe?mac=${encodeURIComponent(this.mac)}`);
        const text = await res.text();
        const m = /lc\.token=(\S+)/.exec(text);
        if (!m) throw new Error(`no lc.token in the boot script:\n${text}`);
        this.boots++;
        return { token: m[1]!, text };
      } catch (err) {
        if (attempt > 50 || !this.#wanted) throw err;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  /** The task root /init would set up for the booted image (rootHealth), as the agent's environment. */
  #taskRootEnv(cmdline: string): Record<string, string> {
    const spec = /(?:^|\s)lc\.image=(\S+)/.exec(cmdline)?.[1];
    const health = spec ? this.#opts.rootHealth?.(spec) : undefined;
    if (!spec || health === undefined) return {};
    const at = spec.lastIndexOf('@');
    return {
      LC_TASK_ROOT: join(this.#dir, TASK_ROOT_DIR),
      LC_ROOT_IMAGE: spec.slice(0, at),
      LC_ROOT_VERSION: spec.slice(at + 1),
      LC_ROOT_HEALTH: health,
    };
  }

  #env(): Record<string, string> {
    return {
      PATH: `${this.#fakeBin}:${process.env.PATH ?? '/usr/bin:/bin'}`,
      LC_POWER_FILE: this.#powerFile,
      LC_KEXEC_FILE: this.#kexecFile,
      HOME: this.#dir,
      ...(this.#opts.env ?? {}),
    };
  }
}

/** The kernel's arguments on a boot script's `kernel [--name N] URL ARGS || goto retry` line. */
export function kernelArgsOf(script: string): string {
  const m = /^kernel\s+(?:--name\s+\S+\s+)?\S+\s+(.*?)\s*\|\|\s*goto retry\s*$/m.exec(script);
  if (!m) throw new Error(`no kernel line in the boot script:\n${script}`);
  return m[1]!;
}

function readKexecLoad(file: string): KexecLoad | undefined {
  if (!existsSync(file)) return undefined;
  const fields = new Map<string, string>();
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const sp = line.indexOf(' ');
    if (sp > 0) fields.set(line.slice(0, sp), line.slice(sp + 1));
  }
  const [argv, cmdline, kernel, initrd] = ['argv', 'cmdline', 'kernel', 'initrd'].map((k) => fields.get(k));
  if (argv === undefined || cmdline === undefined || kernel === undefined || initrd === undefined) return undefined;
  return { argv, cmdline, kernel, initrd };
}
