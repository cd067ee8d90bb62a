/**
 * Forwards a boot server's boot timeline (DHCP, TFTP and image download stages, recorded on
 * its own timeline by the services it shares with the leader) to the leader, so the leader's
 * timeline shows each node's boot whatever segment it booted on. Batched; kept while the
 * leader cannot be reached (up to MAX_QUEUED, oldest dropped first and counted) and sent again.
 */
import { BOOT_STAGES, type BootStageRecord, type BootTimeline } from '../boot/timeline.js';
import type { BootEventBatch } from '../api/boot-servers/schemas.js';
import type { Mac } from '../nodes/mac.js';

/** Events held while the leader is away; beyond this the oldest go (counted in the heartbeat). */
export const MAX_QUEUED = 10_000;
/** Events per request (the leader's schema takes at most 500). */
export const BATCH = 500;
/** How soon a recorded stage leaves (a storm's stages share a request). */
export const FLUSH_MS = 200;
/** Retry delays after a failed send, growing to the last. */
const BACKOFF_MS = [500, 1000, 2000, 5000];

type Event = BootEventBatch['events'][number];

/** Stages the leader records itself: the boot script it writes, reboots, the agent's hello. */
const LEADER_STAGES: ReadonlySet<string> = new Set(['http.script', 'reboot.firmware', 'reboot.kexec', 'agent.hello']);
/** The stages only a boot server's own services record: what the leader takes from it. */
export const FORWARDED_STAGES: ReadonlySet<string> = new Set(BOOT_STAGES.filter((s) => !LEADER_STAGES.has(s)));

export class BootEventForwarder {
  readonly #queue: Event[] = [];
  readonly #lastBoot = new Map<Mac, number>();
  #dropped = 0;
  #failures = 0;
  #timer: NodeJS.Timeout | undefined;
  #inflight: Promise<boolean> | undefined;
  #stopped = false;
  readonly #unsubscribe: () => void;

  constructor(
    timeline: Pick<BootTimeline, 'subscribe'>,
    private readonly send: (batch: BootEventBatch) => Promise<void>,
    private readonly onError: (err: Error) => void,
  ) {
    this.#unsubscribe = timeline.subscribe((r) => this.#add(r));
  }

  get dropped(): number {
    return this.#dropped;
  }

  get queued(): number {
    return this.#queue.length;
  }

  /**
   * Sends what is queued now, after any send in flight: a boot script is asked of the leader
   * only after the DHCP stages before it, so the leader sees the boot in order.
   */
  async flush(): Promise<void> {
    while (this.#queue.length) {
      if (this.#inflight) await this.#inflight;
      else if (!(await this.#sendOne())) return;
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#unsubscribe();
    if (this.#timer) clearTimeout(this.#timer);
    await this.flush().catch(() => undefined);
  }

  #add(r: BootStageRecord): void {
    if (!FORWARDED_STAGES.has(r.stage)) return;
    const prev = this.#lastBoot.get(r.mac);
    this.#lastBoot.delete(r.mac); // re-inserted last: the map stays bounded by dropping the oldest
    if (this.#lastBoot.size >= MAX_QUEUED) this.#lastBoot.delete(this.#lastBoot.keys().next().value as Mac);
    this.#lastBoot.set(r.mac, r.boot);
    const newBoot = prev === undefined ? r.stage === 'dhcp.discover' : prev !== r.boot;
    this.#queue.push({ mac: r.mac, stage: r.stage, ts: r.ts, newBoot, detail: r.detail });
    if (this.#queue.length > MAX_QUEUED) {
      this.#queue.shift();
      this.#dropped++;
    }
    this.#schedule(FLUSH_MS);
  }

  #schedule(ms: number): void {
    if (this.#timer || this.#stopped) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.flush();
    }, ms);
    this.#timer.unref();
  }

  /** Sends one batch; false when it failed (a retry is scheduled). */
  #sendOne(): Promise<boolean> {
    this.#inflight = this.#send().finally(() => {
      this.#inflight = undefined;
    });
    return this.#inflight;
  }

  async #send(): Promise<boolean> {
    const batch = this.#queue.slice(0, BATCH);
    try {
      await this.send({ events: batch });
      this.#queue.splice(0, batch.length);
      this.#failures = 0;
      return true;
    } catch (err) {
      this.#failures++;
      this.onError(err as Error);
      this.#schedule(BACKOFF_MS[Math.min(this.#failures, BACKOFF_MS.length) - 1]!);
      return false;
    }
  }
}
