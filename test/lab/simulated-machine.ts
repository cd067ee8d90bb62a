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
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
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
}

export class SimulatedMachine {
  readonly mac: string;
  /** Boots so far (boot scripts fetched). */
  boots = 0;
  /** The agent's output of the current boot. */
  output = '';
  state: 'off' | 'booting' | 'running' = 'off';
  readonly #opts: MachineOptions;
  readonly #dir: string;
  readonly #fakeBin: string;
  readonly #powerFile: string;
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
    this.#powerFile = join(this.#dir, 'power-request');
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

  cleanup(): void {
    rmSync(this.#dir, { recursive: true, force: true });
  }

  async #run(): Promise<void> {
    while (this.#wanted) {
      this.state = 'booting';
      let token: string;
      try {
        token = await this.#pxe();
      } catch (err) {
        this.output += `PXE failed: ${(err as Error).message}\n`;
        this.history.push('pxe-failed');
        break;
      }
      if (!this.#wanted) break;
      const work = join(this.#dir, `ram-${this.boots}`);
      mkdirSync(work, { recursive: true });
      rmSync(this.#powerFile, { force: true });
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
      const setup = [
        'set -e',
        'for c in reboot poweroff halt; do p=$(command -v "$c" 2>/dev/null || true); if [ -n "$p" ]; then mount --bind "$FAKE_BIN/$c" "$(readlink -f "$p")"; fi; done',
        '[ -e /proc/sysrq-trigger ] && mount --bind /dev/null /proc/sysrq-trigger || true',
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
          env: { ...this.#env(), FAKE_BIN: this.#fakeBin },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      this.#child = child;
      child.stdout!.setEncoding('utf8').on('data', (d: string) => (this.output += d));
      child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.output += d));
      await new Promise<void>((resolve) => child.once('close', () => resolve()));
      this.#child = undefined;
      const request = existsSync(this.#powerFile) ? readFileSync(this.#powerFile, 'utf8').trim() : '';
      this.history.push(request || 'exit');
      rmSync(work, { recursive: true, force: true }); // RAM is gone
      if (request !== 'reboot') break;
      await new Promise((r) => setTimeout(r, this.#opts.postMs ?? 100));
    }
    this.state = 'off';
  }

  /** What iPXE does first: fetch the boot script; the dispatcher counts a boot and issues a token. */
  async #pxe(): Promise<string> {
    for (let attempt = 0; ; attempt++) {
      try {
        const res = await fetch(`${this.#opts.bootUrl ?? this.#opts.dispatcherUrl}/boot.ipxe?mac=${encodeURIComponent(this.mac)}`);
        const script = await res.text();
        const m = /lc\.token=(\S+)/.exec(script);
        if (!m) throw new Error(`no lc.token in the boot script:\n${script}`);
        this.boots++;
        return m[1]!;
      } catch (err) {
        if (attempt > 50 || !this.#wanted) throw err;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  #env(): Record<string, string> {
    return {
      PATH: `${this.#fakeBin}:${process.env.PATH ?? '/usr/bin:/bin'}`,
      LC_POWER_FILE: this.#powerFile,
      HOME: this.#dir,
      ...(this.#opts.env ?? {}),
    };
  }
}
