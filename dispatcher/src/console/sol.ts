/**
 * Serial-over-LAN capture: for every node whose BMC is IPMI (power/: its own `bmc`, or its
 * label group's), one `ipmitool -I lanplus … sol activate` runs as a child of the dispatcher;
 * what it prints (the node's serial console: firmware, boot loader, kernel, getty) is split
 * into lines (sol-lines.ts) and filed under the node as source `serial` in the console store,
 * which bounds it per node and keeps it across restarts. So a node's last words are on
 * record even when it, its agent and its network are gone.
 *
 * A session that ends (BMC unreachable, wrong credentials, payload taken) is started again
 * after a back-off per node (power/service.ts's BackOff: doubling up to a few minutes,
 * reset once a session has lasted a while), and each change between `capturing` and
 * `retrying` is one `node.console` event, not one per attempt. A payload already active (a
 * session of ours a crash left behind, or someone's terminal) is deactivated first, once.
 * The password goes to ipmitool by file (`-f`), as for power. One session per BMC address:
 * two nodes naming the same BMC would take its one SOL payload from each other.
 *
 * Redfish has no standard serial stream (a Manager's SerialConsole points at SSH or IPMI),
 * so a Redfish BMC gets no capture here; a BMC that also speaks IPMI can be given as `ipmi`.
 * `sol: false` in a BMC's entry turns capture off for it.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { join } from 'node:path';
import type { Core } from '../core.js';
import type { EventLog } from '../events/event-log.js';
import { RateLimitedLog, type Logger } from '../log.js';
import type { Mac } from '../nodes/mac.js';
import { bmcLabel, checkPasswordFile, type BmcSpec } from '../power/bmc.js';
import { classifyIpmiError, IPMITOOL, IpmiDriver } from '../power/ipmi.js';
import { BackOff, powerServiceOf } from '../power/service.js';
import { LineBudget } from './lines.js';
import { SerialLineSplitter } from './sol-lines.js';
import { consoleLogOf, type ConsoleLog } from './store.js';

/** First wait after a session ended; doubles per failure in a row up to SOL_RETRY_MAX_MS. */
export const SOL_RETRY_BASE_MS = 5_000;
export const SOL_RETRY_MAX_MS = 5 * 60_000;
/** A session that lasted this long was healthy: the next failure waits SOL_RETRY_BASE_MS again. */
export const SOL_STABLE_MS = 60_000;
/** A session still up after this long is capturing, banner or not (a failed activation ends sooner). */
export const SOL_SETTLE_MS = 20_000;
/** How often the node list is read again for BMCs that appeared, changed or went. */
export const SOL_RECONCILE_MS = 10_000;
/** Lines a node's serial console may file per second on average, and at once (a boot or a panic). */
export const SOL_LINES_PER_SECOND = 200;
export const SOL_BURST_LINES = 2000;
/** ipmitool's own stderr kept to say why a session ended. */
const MAX_STDERR = 8 * 1024;
/** sol deactivate, and the wait for a stopped ipmitool to exit. */
const DEACTIVATE_TIMEOUT_MS = 8_000;
const EXIT_WAIT_MS = 2_000;

/** What ipmitool prints on stdout around the node's output: not console lines. */
const OPERATIONAL_RE = /^\[SOL Session operational\. {1,4}Use .{1,8} for help\]$/;
const TERMINATED_RE = /^\[terminated ipmitool\]$/;
const ALREADY_ACTIVE_RE = /SOL payload already active/i;
const DISABLED_RE = /SOL payload disabled|Error activating SOL payload: (?:Invalid command|.*not supported)|Payload type .* not supported/i;

export type SolState = 'starting' | 'capturing' | 'retrying' | 'stopped';

export interface SolSessionView {
  node: string;
  mac: Mac;
  bmc: string;
  state: SolState;
  /** Why the last session ended (retrying), never with credentials. */
  reason: string | null;
  failures: number;
}

export interface SolCounters {
  /** ipmitool processes started. */
  sessions: number;
  /** Lines filed. */
  lines: number;
  /** Lines cut at the line-length bound. */
  cut: number;
  /** Lines over a node's budget, dropped. */
  floodDropped: number;
}

/** The nodes to capture: the registry's, with the BMC the cluster file gives each. */
export interface SolTarget {
  mac: Mac;
  name: string;
  bmc: BmcSpec;
}

export interface SolCaptureDeps {
  targets: () => SolTarget[];
  nodeName: (mac: Mac) => string | undefined;
  store: ConsoleLog;
  events: EventLog;
  log: Logger;
  now?: () => number;
  /** ipmitool, or a stand-in in tests. */
  bin?: string;
  retryBaseMs?: number;
  retryMaxMs?: number;
  stableMs?: number;
  settleMs?: number;
  reconcileMs?: number;
  linesPerSecond?: number;
  burstLines?: number;
}

export class SolCapture {
  readonly #sessions = new Map<Mac, SolSession>();
  readonly counters: SolCounters = { sessions: 0, lines: 0, cut: 0, floodDropped: 0 };
  readonly noisy: RateLimitedLog;
  readonly now: () => number;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(readonly deps: SolCaptureDeps) {
    this.now = deps.now ?? Date.now;
    this.noisy = new RateLimitedLog(deps.log);
  }

  start(): void {
    this.reconcile();
    this.#timer = setInterval(() => this.reconcile(), this.deps.reconcileMs ?? SOL_RECONCILE_MS);
    this.#timer.unref();
  }

  /** Starts sessions for new BMCs, stops those of nodes (or BMC entries) that went. */
  reconcile(): void {
    if (this.#stopped) return;
    const wanted = new Map<Mac, SolTarget>();
    const byAddress = new Map<string, string>();
    for (const t of this.deps.targets()) {
      const owner = byAddress.get(t.bmc.address);
      if (owner !== undefined) {
        this.noisy.warn(
          `shared:${t.bmc.address}`,
          { node: t.name, bmc: bmcLabel(t.bmc), capturedFor: owner },
          'two nodes name the same BMC: its serial console is captured for the first only',
        );
        continue;
      }
      byAddress.set(t.bmc.address, t.name);
      wanted.set(t.mac, t);
    }
    for (const [mac, s] of this.#sessions) {
      const t = wanted.get(mac);
      if (t && JSON.stringify(t.bmc) === JSON.stringify(s.bmc)) continue;
      this.#sessions.delete(mac);
      void s.stop();
    }
    for (const [mac, t] of wanted) {
      if (this.#sessions.has(mac)) continue;
      const s = new SolSession(this, t);
      this.#sessions.set(mac, s);
      s.start();
    }
  }

  /** Stops a node's session at once (the node was forgotten). */
  drop(mac: Mac): Promise<void> {
    const s = this.#sessions.get(mac);
    this.#sessions.delete(mac);
    return s ? s.stop() : Promise.resolve();
  }

  sessions(): SolSessionView[] {
    return [...this.#sessions.values()].map((s) => s.view());
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#timer);
    const all = [...this.#sessions.values()];
    this.#sessions.clear();
    await Promise.all(all.map((s) => s.stop()));
  }
}

/** One node's SOL session, started again with back-off whenever it ends. */
class SolSession {
  readonly mac: Mac;
  readonly bmc: BmcSpec;
  readonly #who: string;
  readonly #capture: SolCapture;
  readonly #driver: IpmiDriver;
  readonly #backoff: BackOff;
  readonly #budget: LineBudget;
  #state: SolState = 'starting';
  /** The last state told as an event: retries that fail again are not news. */
  #told: 'capturing' | 'retrying' | null = null;
  #reason: string | null = null;
  #child: ChildProcessWithoutNullStreams | undefined;
  #exited: Promise<void> = Promise.resolve();
  #timer: NodeJS.Timeout | undefined;
  #since = 0;
  #dropped = 0;
  #markedAt = 0;
  #deactivatedOnce = false;
  #stopping = false;

  constructor(capture: SolCapture, target: SolTarget) {
    this.#capture = capture;
    this.mac = target.mac;
    this.bmc = target.bmc;
    this.#who = bmcLabel(target.bmc);
    this.#driver = new IpmiDriver(target.bmc);
    const d = capture.deps;
    this.#backoff = new BackOff(d.retryBaseMs ?? SOL_RETRY_BASE_MS, d.retryMaxMs ?? SOL_RETRY_MAX_MS);
    this.#budget = new LineBudget(d.linesPerSecond ?? SOL_LINES_PER_SECOND, d.burstLines ?? SOL_BURST_LINES, capture.now());
  }

  get #name(): string {
    return this.#capture.deps.nodeName(this.mac) ?? this.mac;
  }

  view(): SolSessionView {
    return {
      node: this.#name,
      mac: this.mac,
      bmc: this.#who,
      state: this.#state,
      reason: this.#reason,
      failures: this.#backoff.failures,
    };
  }

  start(): void {
    if (this.#stopping) return;
    this.#timer = undefined;
    const badFile = checkPasswordFile(this.bmc.passwordFile);
    if (badFile) return this.#ended(`passwordFile: ${badFile}`);
    const { deps, counters } = this.#capture;
    counters.sessions++;
    if (this.#state !== 'retrying') this.#state = 'starting'; // retrying until a session runs again
    this.#since = this.#capture.now();
    const argv = [deps.bin ?? IPMITOOL, ...this.#driver.argv(['sol', 'activate'])];
    // ipmitool's stdout to a pipe is block-buffered: its banner would wait for the node's first
    // output. stdbuf (coreutils) makes it line-buffered; without it, a session that stays up
    // SOL_SETTLE_MS counts as capturing.
    const stdbuf = stdbufPath();
    const child = spawn(stdbuf ?? argv[0]!, stdbuf ? ['-oL', ...argv] : argv.slice(1), {
      // stdin stays open and silent: ipmitool ends the session when its input ends.
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    });
    this.#child = child;
    const settle = setTimeout(() => this.#capturing(), deps.settleMs ?? SOL_SETTLE_MS);
    settle.unref();
    child.stdin.on('error', () => undefined); // EPIPE when it exits first
    const splitter = new SerialLineSplitter();
    let stderr = '';
    let spawnError: string | null = null;
    let cutSeen = 0;
    const take = (lines: string[]) => {
      counters.cut += splitter.cut - cutSeen;
      cutSeen = splitter.cut;
      this.#lines(lines);
    };
    child.stdout.on('data', (d: Buffer) => take(splitter.push(d)));
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr = (stderr + d).slice(-MAX_STDERR);
    });
    child.on('error', (e) => {
      spawnError = `cannot run ${deps.bin ?? IPMITOOL}: ${e.message} (apt-get install ipmitool)`;
    });
    this.#exited = new Promise((resolve) =>
      child.on('close', (code, signal) => {
        clearTimeout(settle);
        take(splitter.end());
        this.#child = undefined;
        resolve();
        if (this.#stopping) return;
        this.#afterExit(spawnError, stderr, code, signal);
      }),
    );
  }

  #lines(lines: string[]): void {
    const { counters, deps } = this.#capture;
    const kept: string[] = [];
    for (const l of lines) {
      if (OPERATIONAL_RE.test(l)) {
        this.#capturing();
        continue;
      }
      if (TERMINATED_RE.test(l)) continue;
      kept.push(l);
    }
    if (kept.length === 0) return;
    this.#capturing(); // output without the banner: it runs
    const now = this.#capture.now();
    // After a flood, a line says how many were lost: once the flood pauses (all of this chunk
    // fits), or once a second while it lasts — not in every token the budget frees.
    const wanted = kept.length + (this.#dropped > 0 ? 1 : 0);
    const granted = this.#budget.take(wanted, now);
    const marker = this.#dropped > 0 && granted > 0 && (granted === wanted || now - this.#markedAt >= 1000) ? 1 : 0;
    const out = kept.slice(0, Math.min(kept.length, granted - marker));
    const over = kept.length - out.length;
    if (marker && granted > 0) {
      out.unshift(`[lilcluster: ${this.#dropped} serial console lines dropped: over ${this.#budget.rate} lines/s]`);
      this.#dropped = 0;
      this.#markedAt = now;
    }
    if (over > 0) {
      if (this.#dropped === 0)
        this.#capture.noisy.warn(
          `flood:${this.mac}`,
          { node: this.#name, mac: this.mac, linesPerSecond: this.#budget.rate },
          'serial console lines over the node budget: dropping until it has room again',
        );
      this.#dropped += over;
      counters.floodDropped += over;
    }
    if (out.length === 0) return;
    counters.lines += out.length - (marker && granted > 0 ? 1 : 0);
    deps.store.append(this.mac, 'serial', out, now);
  }

  #capturing(): void {
    if (this.#state === 'capturing' || this.#stopping) return;
    this.#state = 'capturing';
    this.#reason = null;
    this.#tell('capturing', `${this.#name}: serial console captured by Serial-over-LAN through the ${this.#who}`);
  }

  #afterExit(spawnError: string | null, stderr: string, code: number | null, signal: NodeJS.Signals | null): void {
    if (spawnError) return this.#ended(spawnError);
    // stdbuf says 127 when it cannot run the command.
    if (code === 127) return this.#ended(`cannot run ${this.#capture.deps.bin ?? IPMITOOL} (apt-get install ipmitool)`);
    // A payload left active (our own session before a crash, or someone's terminal): free it once, then retry.
    if (ALREADY_ACTIVE_RE.test(stderr) && !this.#deactivatedOnce) {
      this.#deactivatedOnce = true;
      this.#capture.deps.log.info(
        { node: this.#name, bmc: this.#who },
        'SOL payload already active on the BMC: deactivating it, then capturing',
      );
      void this.#deactivate().then(() => {
        if (!this.#stopping) this.start();
      });
      return;
    }
    let reason: string;
    if (ALREADY_ACTIVE_RE.test(stderr)) reason = 'the SOL payload is active in another session (deactivated once already)';
    else if (DISABLED_RE.test(stderr))
      reason = 'the BMC offers no Serial-over-LAN, or has it disabled (sol: false in its bmc entry stops trying)';
    else if (this.#state === 'capturing' && !/error|unable|fail|no response|closed/i.test(stderr))
      reason = `the session ended (${signal ?? `exit ${code}`})`;
    else reason = classifyIpmiError(this.bmc, stderr).message;
    this.#ended(reason);
  }

  /** The session is over: wait (back-off) and start again. */
  #ended(reason: string): void {
    const now = this.#capture.now();
    if (this.#state === 'capturing' && now - this.#since >= (this.#capture.deps.stableMs ?? SOL_STABLE_MS)) {
      this.#backoff.succeeded();
      this.#deactivatedOnce = false;
    }
    const delay = this.#backoff.failed(now);
    this.#state = 'retrying';
    this.#reason = reason;
    const message = `${this.#name}: serial console capture through the ${this.#who} stopped: ${reason}; trying again with back-off`;
    if (this.#told !== 'retrying') this.#tell('retrying', message, { reason, retryInMs: delay });
    else
      this.#capture.noisy.debug(
        `retry:${this.mac}`,
        { node: this.#name, bmc: this.#who, reason, retryInMs: delay },
        'SOL session failed again',
      );
    this.#timer = setTimeout(() => this.start(), delay);
    this.#timer.unref();
  }

  #tell(state: 'capturing' | 'retrying', message: string, extra: Record<string, unknown> = {}): void {
    this.#told = state;
    const { events, log } = this.#capture.deps;
    events.append({
      kind: 'node.console',
      node: this.#name,
      message,
      data: { source: 'serial', state, bmc: this.#who, ...extra },
    });
    if (state === 'capturing') log.info({ node: this.#name, bmc: this.#who }, 'serial console capture (SOL) started');
    else log.warn({ node: this.#name, bmc: this.#who, ...extra }, 'serial console capture (SOL) stopped');
  }

  /** `sol deactivate`, bounded in time; its failure is only logged. */
  #deactivate(): Promise<void> {
    const { deps } = this.#capture;
    return new Promise((resolve) => {
      const child = spawn(deps.bin ?? IPMITOOL, this.#driver.argv(['sol', 'deactivate']), {
        stdio: ['ignore', 'ignore', 'pipe'],
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
      });
      let err = '';
      child.stderr.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-MAX_STDERR)));
      const timer = setTimeout(() => child.kill('SIGKILL'), DEACTIVATE_TIMEOUT_MS);
      child.on('error', () => undefined);
      child.on('close', (code) => {
        clearTimeout(timer);
        if (code !== 0 && !/already de-?activated/i.test(err))
          deps.log.debug({ node: this.#name, bmc: this.#who, code }, 'sol deactivate did not succeed');
        resolve();
      });
    });
  }

  /** Ends the session and frees the BMC's payload for the next client. */
  async stop(): Promise<void> {
    if (this.#stopping) return this.#exited;
    this.#stopping = true;
    clearTimeout(this.#timer);
    const child = this.#child;
    const wasRunning = child !== undefined;
    if (child) {
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), EXIT_WAIT_MS);
      await this.#exited;
      clearTimeout(killer);
    }
    this.#state = 'stopped';
    if (wasRunning) await this.#deactivate();
  }
}

let stdbuf: string | null | undefined;

/** coreutils' stdbuf on PATH, looked up once; null when there is none. */
function stdbufPath(): string | null {
  if (stdbuf === undefined) {
    stdbuf = null;
    for (const d of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
      try {
        accessSync(join(d, 'stdbuf'), constants.X_OK);
        stdbuf = join(d, 'stdbuf');
        break;
      } catch {
        /* not here */
      }
    }
  }
  return stdbuf;
}

export interface RunningSol {
  capture: SolCapture;
  stop(): Promise<void>;
}

/** SOL capture for the nodes of a dispatcher; the console store and the power service's BMC lookup are the core's. */
export function startSol(core: Core, opts: Partial<Omit<SolCaptureDeps, 'targets' | 'nodeName' | 'events' | 'log'>> = {}): RunningSol {
  const log = core.log.child({ svc: 'sol' });
  const power = powerServiceOf(core);
  let redfishTold = false;
  const targets = (): SolTarget[] => {
    const out: SolTarget[] = [];
    let redfish = 0;
    for (const n of core.nodes.list()) {
      const bmc = power.bmcOf(n);
      if (!bmc || bmc.sol === false) continue;
      if (bmc.type !== 'ipmi') {
        redfish++;
        continue;
      }
      out.push({ mac: n.mac, name: n.name, bmc });
    }
    if (redfish > 0 && !redfishTold) {
      redfishTold = true;
      log.info(
        { nodes: redfish },
        'nodes with a Redfish BMC get no serial console capture (Redfish has no standard serial stream; a BMC that also speaks IPMI can be given as type ipmi)',
      );
    }
    return out;
  };
  const capture = new SolCapture({
    store: consoleLogOf(core.db),
    now: core.now,
    ...opts,
    targets,
    nodeName: (mac) => core.nodes.byMac(mac)?.name,
    events: core.events,
    log,
  });
  const unsubscribe = core.nodes.onForget((mac) => capture.drop(mac));
  const METRIC = 'lilcluster_sol_total';
  core.metrics.recollect({
    name: METRIC,
    help: 'Serial-over-LAN capture: ipmitool sessions started, lines stored, lines cut at the length bound, lines dropped over the flood budget',
    type: 'counter',
    labelNames: ['kind'],
    collect: () => Object.entries(capture.counters).map(([kind, value]) => ({ labels: { kind }, value })),
  });
  const SESSIONS = 'lilcluster_sol_sessions';
  core.metrics.recollect({
    name: SESSIONS,
    help: 'Serial-over-LAN sessions by state: starting, capturing, retrying (backing off after a failure)',
    type: 'gauge',
    labelNames: ['state'],
    collect: () => {
      const by: Record<string, number> = { starting: 0, capturing: 0, retrying: 0 };
      for (const v of capture.sessions()) if (v.state in by) by[v.state]!++;
      return Object.entries(by).map(([state, value]) => ({ labels: { state }, value }));
    },
  });
  capture.start();
  const n = capture.sessions().length;
  if (n > 0) log.info({ sessions: n }, 'capturing serial consoles by Serial-over-LAN');
  return {
    capture,
    async stop() {
      unsubscribe();
      core.metrics.remove(METRIC);
      core.metrics.remove(SESSIONS);
      await capture.stop();
      capture.deps.store.flush();
    },
  };
}
