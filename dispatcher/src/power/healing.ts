/**
 * Self-healing through BMCs (cluster file `healing`, power/policy-config.ts):
 *   - a node `lost` for longer than its rule's lostAfterSeconds is power-cycled through its BMC;
 *   - a node whose kernel log (netconsole, or the serial console by SOL) shows a panic is
 *     cycled at once (console store subscription), once per boot;
 *   - a node `booting` for BOOT_HUNG_MS without its agent saying hello (a boot that hung:
 *     a kernel stuck before the agent, a firmware waiting on a key) is cycled like a lost one.
 * Each cycle is a `node.heal` event with its reason and the console's last lines; a node
 * without a BMC gets one event per episode saying it cannot be healed and why.
 *
 * Only these cycles are bounded (maxCyclesPerHour per node, CycleBudget): a machine that
 * dies again at every boot must not be cycled all day. Operator power commands go straight
 * to the power service and are not counted. Nodes that are off (the operator's or the power
 * policy's) are never lost, so never cycled; a cycled node is `rebooting` until it boots.
 */
import type { Core } from '../core.js';
import type { Mac } from '../nodes/mac.js';
import type { NodeRecord } from '../nodes/registry.js';
import type { ConsoleLine, ConsoleLog } from '../console/store.js';
import type { PowerService } from './service.js';
import { healingRuleOf, type HealingPolicy } from './policy-config.js';

export const HEALING_INTERVAL_MS = 1000;
/**
 * A node that began a new boot after our cycle is given this long to finish it before a
 * `lost` counts again: the connection of the boot we cut short times out after the new boot
 * has begun, and the hub then calls the booting node lost.
 */
export const HEAL_BOOT_GRACE_MS = 10 * 60_000;
/** A boot this long without the agent's hello has hung (TCG boots take a minute; real ones less). */
export const BOOT_HUNG_MS = 10 * 60_000;
const HOUR_MS = 3600_000;
/** Console lines carried by a heal event. */
export const HEAL_CONSOLE_LINES = 20;

/** A kernel line that says the machine is dead: a panic, or an oops the kernel calls fatal. */
export function isPanicLine(text: string): boolean {
  return /Kernel panic - not syncing|\bFatal exception\b/.test(text);
}

/** The dispatcher's own cycles per node over the last hour (a sliding window; the clock is passed in). */
export class CycleBudget {
  readonly #cycles = new Map<Mac, number[]>();

  /** Cycles of this node in the hour before `now`. */
  count(mac: Mac, now: number): number {
    return this.#recent(mac, now).length;
  }

  /** null when a cycle may go now, else when the next one may. */
  nextAllowedAt(mac: Mac, now: number, maxPerHour: number): number | null {
    const recent = this.#recent(mac, now);
    if (recent.length < maxPerHour) return null;
    return recent[recent.length - maxPerHour]! + HOUR_MS;
  }

  record(mac: Mac, now: number): void {
    this.#recent(mac, now).push(now);
  }

  #recent(mac: Mac, now: number): number[] {
    const list = this.#cycles.get(mac) ?? [];
    this.#cycles.set(mac, list);
    while (list.length && list[0]! <= now - HOUR_MS) list.shift();
    return list;
  }
}

export type LostVerdict =
  | { kind: 'wait' }
  | { kind: 'cycle'; reason: string }
  | { kind: 'no-bmc'; reason: string }
  | { kind: 'limit'; reason: string; nextAt: number };

/** What to do now with a lost node, or one whose boot may have hung (pure). */
export function lostVerdict(
  node: { state: NodeRecord['state']; stateSince: number },
  rule: { lostAfterSeconds: number; maxCyclesPerHour: number },
  hasBmc: boolean,
  nextAllowedAt: number | null,
  cyclesLastHour: number,
  now: number,
  /** It began a new boot after our last cycle, less than HEAL_BOOT_GRACE_MS ago. */
  bootingSinceCycle = false,
): LostVerdict {
  if ((node.state !== 'lost' && node.state !== 'booting') || bootingSinceCycle) return { kind: 'wait' };
  const lostS = (now - node.stateSince) / 1000;
  if (node.state === 'booting' ? now - node.stateSince < BOOT_HUNG_MS : lostS < rule.lostAfterSeconds) return { kind: 'wait' };
  if (!hasBmc)
    return {
      kind: 'no-bmc',
      reason: 'it has no BMC in the cluster file (bmc: under nodes:, or a bmcs: group for one of its labels), so it cannot be power-cycled',
    };
  if (nextAllowedAt !== null)
    return {
      kind: 'limit',
      nextAt: nextAllowedAt,
      reason: `already power-cycled ${cyclesLastHour} time(s) in the last hour (healing: maxCyclesPerHour ${rule.maxCyclesPerHour})`,
    };
  return {
    kind: 'cycle',
    reason:
      node.state === 'booting'
        ? `booting for ${Math.round(lostS)} s without its agent saying hello: the boot hung`
        : `lost for ${Math.round(lostS)} s (healing: lostAfterSeconds ${rule.lostAfterSeconds})`,
  };
}

export interface SelfHealingDeps {
  core: Pick<Core, 'nodes' | 'events' | 'log' | 'now'>;
  policy: HealingPolicy;
  power: Pick<PowerService, 'bmcOf' | 'run'>;
  console: Pick<ConsoleLog, 'list' | 'subscribe'>;
}

export class SelfHealing {
  readonly budget = new CycleBudget();
  /** Per node, the lost episode (its stateSince) or boot (`boot:N`) already told about: one event each, not one a second. */
  readonly #noted = new Map<Mac, string>();
  /** Per node, the boot count when a panic cycled it: the rest of that boot's panic lines are the same panic. */
  readonly #panicBoot = new Map<Mac, number>();
  readonly #inFlight = new Set<Mac>();
  /** Per node, our last cycle: when, and its boot count then. */
  readonly #cycled = new Map<Mac, { at: number; bootCount: number }>();
  #timer: NodeJS.Timeout | undefined;
  #unsubscribe: (() => void) | undefined;

  constructor(private readonly deps: SelfHealingDeps) {}

  start(intervalMs = HEALING_INTERVAL_MS): void {
    this.#timer = setInterval(() => void this.tick(), intervalMs);
    this.#timer.unref();
    this.#unsubscribe = this.deps.console.subscribe((lines) => this.onConsole(lines));
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#unsubscribe?.();
  }

  /** One pass over the lost nodes; resolves once its cycles are done. */
  async tick(): Promise<void> {
    const { core, policy, power } = this.deps;
    const now = core.now();
    const work: Promise<void>[] = [];
    for (const n of core.nodes.list()) {
      // Back from the boot after our cycle (a state read before the cycle's own write does not count).
      if ((n.state === 'ready' || n.state === 'busy') && n.bootCount > (this.#cycled.get(n.mac)?.bootCount ?? Infinity))
        this.#cycled.delete(n.mac);
      if ((n.state !== 'lost' && n.state !== 'booting') || n.enrollment !== 'admitted' || this.#inFlight.has(n.mac)) continue;
      const cause = n.state === 'lost' ? 'lost' : 'boot-hung';
      const rule = healingRuleOf(policy, n.labels);
      const cycled = this.#cycled.get(n.mac);
      const v = lostVerdict(
        n,
        rule,
        power.bmcOf(n) !== null,
        this.budget.nextAllowedAt(n.mac, now, rule.maxCyclesPerHour),
        this.budget.count(n.mac, now),
        now,
        cycled !== undefined && n.bootCount > cycled.bootCount && now - cycled.at < HEAL_BOOT_GRACE_MS,
      );
      const episode = `${n.state}:${n.stateSince}`;
      if (v.kind === 'cycle') work.push(this.#cycle(n, cause, v.reason));
      else if (v.kind === 'no-bmc') this.#noteOnce(n, episode, `${n.name} cannot be healed: ${v.reason}`, { cause, healed: false });
      else if (v.kind === 'limit')
        this.#noteOnce(
          n,
          episode,
          `${n.name} is ${cause === 'lost' ? 'lost' : 'stuck booting'} and not power-cycled: ${v.reason}; next possible at ${new Date(v.nextAt).toISOString()}`,
          {
            cause,
            healed: false,
            nextAt: v.nextAt,
          },
        );
    }
    await Promise.all(work);
  }

  /** Console lines stored (all nodes): a panic cycles its node at once. */
  onConsole(lines: readonly ConsoleLine[]): void {
    const { core, policy, power } = this.deps;
    for (const l of lines) {
      if (!isPanicLine(l.text)) continue;
      const n = core.nodes.byMac(l.mac);
      if (!n || n.state === 'off' || n.enrollment !== 'admitted' || this.#inFlight.has(n.mac)) continue;
      if (this.#panicBoot.get(n.mac) === n.bootCount) continue;
      const rule = healingRuleOf(policy, n.labels);
      if (!rule.panic) continue;
      const episode = `panic:${n.bootCount}`;
      const line = l.text.slice(0, 200);
      if (!power.bmcOf(n)) {
        this.#noteOnce(n, episode, `${n.name}: kernel panic on record (${line}); it cannot be healed: it has no BMC in the cluster file`, {
          cause: 'panic',
          healed: false,
        });
        continue;
      }
      const now = core.now();
      const next = this.budget.nextAllowedAt(n.mac, now, rule.maxCyclesPerHour);
      if (next !== null) {
        this.#noteOnce(
          n,
          episode,
          `${n.name}: kernel panic on record and not power-cycled: already cycled ${this.budget.count(n.mac, now)} time(s) in the last hour (healing: maxCyclesPerHour ${rule.maxCyclesPerHour})`,
          { cause: 'panic', healed: false, nextAt: next },
        );
        continue;
      }
      this.#panicBoot.set(n.mac, n.bootCount);
      void this.#cycle(n, 'panic', `kernel panic: ${line}`);
    }
  }

  async #cycle(n: NodeRecord, cause: 'lost' | 'boot-hung' | 'panic', reason: string): Promise<void> {
    const { core, power } = this.deps;
    this.#inFlight.add(n.mac);
    this.budget.record(n.mac, core.now());
    this.#cycled.set(n.mac, { at: core.now(), bootCount: n.bootCount });
    const console = this.#lastLines(n.mac);
    try {
      await power.run(n, 'cycle', { by: 'healing', reason: `self-healing: ${reason}` });
      core.nodes.setState(n.mac, 'rebooting', `self-healing: ${reason}`, { by: 'operator' });
      core.events.append({
        kind: 'node.heal',
        node: n.name,
        message: `${n.name} power-cycled through its BMC: ${reason}${console.length ? `; console: ${console.at(-1)}` : ''}`,
        data: { cause, healed: true, reason, console },
      });
      core.log.warn({ node: n.name, cause, reason }, 'node power-cycled by self-healing');
    } catch (err) {
      // The power service recorded the failure (node.power) and backs the BMC off.
      core.events.append({
        kind: 'node.heal',
        node: n.name,
        message: `${n.name} could not be power-cycled (${reason}): ${(err as Error).message}`,
        data: { cause, healed: false, reason, error: (err as Error).message, console },
      });
    } finally {
      this.#inFlight.delete(n.mac);
    }
  }

  /** The console's last lines, kernel and serial, as `source: text`. */
  #lastLines(mac: Mac): string[] {
    return this.deps.console.list({ mac, limit: HEAL_CONSOLE_LINES }).map((l) => `${l.source}: ${l.text}`);
  }

  #noteOnce(n: NodeRecord, episode: string, message: string, data: Record<string, unknown>): void {
    if (this.#noted.get(n.mac) === episode) return;
    this.#noted.set(n.mac, episode);
    this.deps.core.events.append({ kind: 'node.heal', node: n.name, message, data: { ...data, console: this.#lastLines(n.mac) } });
    this.deps.core.log.warn({ node: n.name, ...data }, 'node not healed');
  }
}
