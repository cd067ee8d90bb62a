/**
 * Power through nodes' BMCs: finds a node's BMC in the cluster file (its own `bmc`, else the
 * first `bmcs` group one of its labels is in), runs the action with a time limit, records it
 * as a `node.power` event with its outcome, and backs off a BMC that failed.
 *
 * Back-off, per BMC: after a failure (no answer, refused credentials, refusal) the BMC is not
 * called again for BACKOFF_BASE_MS, doubling with each failure in a row up to BACKOFF_MAX_MS;
 * a call in that window is refused at once, saying when to retry (the first such refusal of a
 * window is an event, the rest are not: a script's retry loop must not fill the log). Wrong credentials back off
 * too: many BMCs lock an account after a few bad logins. One call at a time per BMC (a BMC
 * serves few sessions); other BMCs are not held up.
 */
import type { Logger } from '../log.js';
import type { EventLog } from '../events/event-log.js';
import type { ClusterFile } from '../nodes/cluster-file.js';
import { DispatcherError, type ErrorCode } from '../errors.js';
import {
  BmcFailure,
  bmcLabel,
  checkPasswordFile,
  expandAddress,
  type BmcDriver,
  type BmcSpec,
  type PowerAction,
  type PowerState,
} from './bmc.js';
import { IpmiDriver } from './ipmi.js';
import { RedfishDriver } from './redfish.js';

export const BACKOFF_BASE_MS = 2_000;
export const BACKOFF_MAX_MS = 5 * 60_000;
/** One BMC call, all attempts included. */
export const DEFAULT_POWER_TIMEOUT_MS = 15_000;

export type PowerOp = 'status' | PowerAction;

export interface PowerResult {
  node: string;
  /** `ipmi BMC 10.1.0.12`: type and address, never credentials. */
  bmc: string;
  action: PowerOp;
  /** The power state read (status) or asked for (on/off); null after cycle and reset. */
  power: PowerState | null;
  message: string;
}

export interface PowerTarget {
  name: string;
  labels: readonly string[];
}

/** Who asked for a power action: the operator (API, CLI, page), self-healing or the queue's power policy. */
export type PowerActor = 'operator' | 'healing' | 'policy';

export interface PowerRunOptions {
  /** Default operator. Recorded in the event (`data.by`). */
  by?: PowerActor;
  /** Why (healing, policy): the start of the event's message. */
  reason?: string;
}

export interface PowerServiceDeps {
  cluster: ClusterFile;
  events: EventLog;
  log: Logger;
  now?: () => number;
  timeoutMs?: number;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** Tests: drivers that are not ipmitool or HTTPS. */
  driver?: (bmc: BmcSpec) => BmcDriver;
}

/** Exponential back-off state of one BMC. */
export class BackOff {
  #failures = 0;
  #until = 0;
  #refusalNoted = false;
  constructor(
    private readonly baseMs: number,
    private readonly maxMs: number,
  ) {}
  /** ms to wait before the next call (0: go). */
  waitMs(now: number): number {
    return Math.max(0, this.#until - now);
  }
  failed(now: number): number {
    this.#failures++;
    const delay = Math.min(this.maxMs, this.baseMs * 2 ** Math.min(this.#failures - 1, 30));
    this.#until = now + delay;
    this.#refusalNoted = false;
    return delay;
  }
  /** True the first time in a back-off window: a storm of refused calls is one event, not thousands. */
  noteRefusal(): boolean {
    const first = !this.#refusalNoted;
    this.#refusalNoted = true;
    return first;
  }
  succeeded(): void {
    this.#failures = 0;
    this.#until = 0;
  }
  get failures(): number {
    return this.#failures;
  }
}

const CODE: Record<BmcFailure['kind'], ErrorCode> = {
  auth: 'DSP_ERR_BMC_AUTH',
  timeout: 'DSP_ERR_BMC_TIMEOUT',
  refused: 'DSP_ERR_BMC',
  tls: 'DSP_ERR_BMC',
};

export class PowerService {
  readonly #drivers = new Map<string, BmcDriver>();
  readonly #backoff = new Map<string, BackOff>();
  readonly #queue = new Map<string, Promise<unknown>>();
  readonly #now: () => number;

  constructor(private readonly deps: PowerServiceDeps) {
    this.#now = deps.now ?? Date.now;
  }

  /** The node's BMC, or null when the cluster file gives it none. */
  bmcOf(node: PowerTarget): BmcSpec | null {
    const own = this.deps.cluster.nodes.find((s) => s.name === node.name)?.bmc;
    if (own) return own;
    for (const g of this.deps.cluster.bmcs ?? []) {
      if (!g.labels.some((l) => node.labels.includes(l))) continue;
      const address = expandAddress(g.address, node.name);
      if (address === null) continue;
      const { labels: _labels, ...spec } = g;
      return { ...spec, address };
    }
    return null;
  }

  /** Runs one power operation on the node's BMC; throws a DispatcherError naming node and BMC. */
  async run(node: PowerTarget, op: PowerOp, opts: PowerRunOptions = {}): Promise<PowerResult> {
    const by = opts.by ?? 'operator';
    const bmc = this.bmcOf(node);
    if (!bmc)
      throw new DispatcherError('DSP_ERR_NO_BMC', `${node.name} has no BMC in the cluster file`, {
        hint: 'give it bmc: {type, address, user, passwordFile} under nodes:, or a bmcs: group for one of its labels',
      });
    const who = bmcLabel(bmc);
    const key = `${bmc.type} ${bmc.address}`;
    // Per BMC and credentials: one entry's wrong password does not hold up another's calls.
    const backoff = this.#backoffOf(JSON.stringify(bmc));
    const wait = backoff.waitMs(this.#now());
    if (wait > 0) {
      const err = new DispatcherError(
        'DSP_ERR_BMC_BACKOFF',
        `${node.name}: the ${who} failed ${backoff.failures} time(s) in a row; not calling it again for ${Math.ceil(wait / 1000)} s`,
        { hint: 'retry after that; check the BMC is reachable and its credentials' },
      );
      if (backoff.noteRefusal()) this.#record(node, who, op, false, err.message, { code: err.code, by }, opts.reason);
      throw err;
    }
    const badFile = checkPasswordFile(bmc.passwordFile);
    if (badFile) {
      const err = new DispatcherError('DSP_ERR_CONFIG', `${node.name}: passwordFile of the ${who}: ${badFile}`, {
        hint: 'the file holds the password on its first line, owned by the dispatcher, mode 0600',
      });
      this.#record(node, who, op, false, err.message, { code: err.code, by }, opts.reason);
      throw err;
    }
    const prev = this.#queue.get(key) ?? Promise.resolve();
    const mine = prev.catch(() => undefined).then(() => this.#call(node, bmc, who, op, backoff, by, opts.reason));
    this.#queue.set(key, mine);
    try {
      return await mine;
    } finally {
      if (this.#queue.get(key) === mine) this.#queue.delete(key);
    }
  }

  async #call(
    node: PowerTarget,
    bmc: BmcSpec,
    who: string,
    op: PowerOp,
    backoff: BackOff,
    by: PowerActor,
    reason: string | undefined,
  ): Promise<PowerResult> {
    const driver = this.#driverOf(bmc);
    const signal = AbortSignal.timeout(this.deps.timeoutMs ?? DEFAULT_POWER_TIMEOUT_MS);
    const started = this.#now();
    try {
      let power: PowerState | null;
      // Many BMCs refuse to cycle a machine that is off ("not supported in present state"):
      // a hard reboot of a machine that is off powers it on.
      const act = op === 'cycle' && (await driver.status(signal)) === 'off' ? 'on' : op;
      if (act === 'status') power = await driver.status(signal);
      else {
        await driver.act(act, signal);
        power = act === 'on' || act === 'off' ? act : null;
      }
      backoff.succeeded();
      const message =
        op === 'status' ? `powered ${power} (${who})` : `${act !== op ? 'it was off: ' : ''}power ${act} done through the ${who}`;
      this.#record(node, who, op, true, `${node.name}: ${message}`, { ...(power ? { power } : {}), ms: this.#now() - started, by }, reason);
      return { node: node.name, bmc: who, action: op, power, message };
    } catch (e) {
      const f = e instanceof BmcFailure ? e : new BmcFailure('refused', (e as Error).message);
      const delay = backoff.failed(this.#now());
      const err = new DispatcherError(CODE[f.kind], `${node.name}: power ${op} through the ${who} failed: ${f.message}`, {
        hint:
          f.kind === 'auth'
            ? 'check user and passwordFile of this BMC in the cluster file'
            : f.kind === 'tls'
              ? 'give ca: (the CA that signed the BMC certificate) or verify: false in its bmc entry'
              : `the BMC is not called again for ${Math.ceil(delay / 1000)} s`,
      });
      this.#record(node, who, op, false, err.message, { code: err.code, backoffMs: delay, by }, reason);
      throw err;
    }
  }

  #record(
    node: PowerTarget,
    who: string,
    op: PowerOp,
    ok: boolean,
    message: string,
    extra: Record<string, unknown>,
    reason?: string,
  ): void {
    this.deps.events.append({
      kind: 'node.power',
      node: node.name,
      message: reason ? `${message} (${reason})` : message,
      data: { action: op, ok, bmc: who, ...extra },
    });
    if (ok) this.deps.log.info({ node: node.name, bmc: who, action: op, ...extra }, 'node power');
    else this.deps.log.warn({ node: node.name, bmc: who, action: op, ...extra, err: message }, 'node power failed');
  }

  #backoffOf(key: string): BackOff {
    let b = this.#backoff.get(key);
    if (!b) {
      b = new BackOff(this.deps.backoffBaseMs ?? BACKOFF_BASE_MS, this.deps.backoffMaxMs ?? BACKOFF_MAX_MS);
      this.#backoff.set(key, b);
    }
    return b;
  }

  #driverOf(bmc: BmcSpec): BmcDriver {
    const key = JSON.stringify(bmc);
    let d = this.#drivers.get(key);
    if (!d) {
      d = this.deps.driver ? this.deps.driver(bmc) : bmc.type === 'ipmi' ? new IpmiDriver(bmc) : new RedfishDriver(bmc);
      this.#drivers.set(key, d);
    }
    return d;
  }
}

const services = new WeakMap<object, PowerService>();

/**
 * The power service of a dispatcher (one per core: its back-off and per-BMC queue must be
 * shared by the power routes and `reboot --hard`).
 */
export function powerServiceOf(core: { cluster: ClusterFile; events: EventLog; log: Logger; now: () => number }): PowerService {
  let s = services.get(core);
  if (!s) {
    s = new PowerService({ cluster: core.cluster, events: core.events, log: core.log.child({ svc: 'power' }), now: core.now });
    services.set(core, s);
  }
  return s;
}
