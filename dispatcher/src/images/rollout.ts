/**
 * Rollout and rollback of an image's versions across its nodes, without losing a task.
 *
 *   rollout   the image's newest build becomes its release. First the canaries (default 1):
 *             each is pinned to the new version and rebooted (a rolling reboot: drained first,
 *             by kexec where it can); each must come back on that version with the image's
 *             health check passed. A canary that fails stops the rollout: the canaries are
 *             unpinned and rebooted back onto the release, which never moved, and the events
 *             say why. Then the release moves, and the other nodes follow `batch` at a time,
 *             each checked the same way.
 *   rollback  the release goes back to the version released before, and every node of the
 *             image not on it is rebooted onto it.
 *
 * The rolling reboots are operations (`dispatcherctl operations`); the rollout's own state is
 * kept per image for `dispatcherctl images` and the page. In memory: after a restart the pins
 * and the release stay where they were (releases.ts), and the rollout can be started again.
 */
import { DispatcherError } from '../errors.js';
import type { Core } from '../core.js';
import type { NodeRecord } from '../nodes/registry.js';
import type { Operations, OperationView } from '../nodes/rolling-reboot.js';
import type { NodeControl } from '../agents/control-contract.js';
import { versionLabel, type ImageVersion } from './catalog.js';

export const DEFAULT_CANARIES = 1;

export type RolloutState = 'canary' | 'rolling' | 'done' | 'failed' | 'reverting' | 'reverted';

export interface RolloutView {
  image: string;
  kind: 'rollout' | 'rollback';
  from: string;
  to: string;
  state: RolloutState;
  message: string;
  startedAt: number;
  finishedAt: number | null;
  /** The operations it ran, in order (canaries, the rest, the way back). */
  operations: number[];
}

export interface RolloutRequest {
  canary?: number;
  batch?: number;
  firmware?: boolean;
  backTimeoutMs?: number;
}

/** What went wrong in a rolling reboot, once: its failed nodes and why, else its message. */
function failureOf(op: OperationView): string {
  const failed = op.nodes.filter((n) => n.phase === 'failed');
  return failed.length ? failed.map((n) => `${n.name}: ${n.error}`).join('; ') : op.message;
}

export class Rollouts {
  readonly #byImage = new Map<string, RolloutView>();

  constructor(
    private readonly core: Core,
    private readonly operations: Operations,
    private readonly control: () => NodeControl,
  ) {}

  get(image: string): RolloutView | undefined {
    const r = this.#byImage.get(image);
    return r ? { ...r, operations: [...r.operations] } : undefined;
  }

  /** Starts a rollout of `image` to its newest build; returns at once (the canaries are on their way). */
  rollout(image: string, req: RolloutRequest = {}): RolloutView {
    const entry = this.#image(image);
    this.#notRunning(image);
    const newest = entry.versions.at(-1)!;
    const current = this.core.images.assignments.versionFor(image);
    const from = current.ok ? current.version : newest;
    const nodes = this.#nodesOf(image);
    if (from.version === newest.version && nodes.every((n) => n.imageVersion === versionLabel(newest)))
      throw new DispatcherError('DSP_ERR_NODE_STATE', `${versionLabel(newest)} is already released and every node of ${image} runs it`, {
        hint: `build a new version first (make image IMAGE=${image} ...), or roll back: dispatcherctl images rollback ${image}`,
      });
    const targets = nodes.filter((n) => this.control().isConnected(n.mac) && n.imageVersion !== versionLabel(newest));
    const canaries = targets.slice(0, Math.max(1, req.canary ?? DEFAULT_CANARIES));
    const view = this.#start(image, 'rollout', from, newest, canaries.length ? 'canary' : 'rolling');
    void this.#runRollout(view, from, newest, canaries, req).catch((err: unknown) =>
      this.#end(view, 'failed', `internal error: ${(err as Error).message}`),
    );
    return this.get(image)!;
  }

  /** Puts the version released before back, and reboots the image's nodes onto it. */
  rollback(image: string, req: RolloutRequest = {}): RolloutView {
    this.#image(image);
    this.#notRunning(image);
    const release = this.core.images.releases.release(image);
    const previous = release?.previous ? this.core.images.catalog.version(image, release.previous) : undefined;
    if (!release?.previous || !previous)
      throw new DispatcherError(
        'DSP_ERR_NODE_STATE',
        `${image} has no earlier release to go back to${release?.previous ? ` (${release.previous} is no longer kept on disk)` : ''}`,
        {
          hint: 'dispatcherctl images shows its versions; IMAGE_KEEP= keeps more of them',
        },
      );
    const from = this.core.images.catalog.version(image, release.version) ?? previous;
    const view = this.#start(image, 'rollback', from, previous, 'rolling');
    void this.#runRollback(view, previous, req).catch((err: unknown) =>
      this.#end(view, 'failed', `internal error: ${(err as Error).message}`),
    );
    return this.get(image)!;
  }

  async #runRollout(view: RolloutView, from: ImageVersion, to: ImageVersion, canaries: NodeRecord[], req: RolloutRequest): Promise<void> {
    const { releases } = this.core.images;
    const image = view.image;
    if (canaries.length) {
      const op = await this.#reboot(view, canaries, to, req, `rollout of ${versionLabel(to)} (canary)`, 1, true);
      if (op.state !== 'done') {
        const why = failureOf(op);
        this.#say(view, 'reverting', `canary failed, ${image} stays on ${view.from}: ${why}`);
        for (const n of canaries) await releases.unpin(n.mac);
        const back = canaries.filter((n) => this.control().isConnected(n.mac) && n.imageVersion !== view.from);
        if (back.length) await this.#reboot(view, back, from, req, `rollout of ${versionLabel(to)}: canary back to ${view.from}`, 1, false);
        return this.#end(view, 'reverted', `canary failed, back on ${view.from}: ${why}`);
      }
    }
    await releases.setRelease(image, to.version, `rollout (canary passed: ${canaries.map((n) => n.name).join(', ') || 'none'})`);
    for (const n of canaries) await releases.unpin(n.mac);
    this.#say(view, 'rolling', `canary passed: ${versionLabel(to)} released; the other nodes follow`);
    const rest = this.#nodesOf(image).filter((n) => this.control().isConnected(n.mac) && n.imageVersion !== versionLabel(to));
    if (rest.length) {
      const op = await this.#reboot(view, rest, to, req, `rollout of ${versionLabel(to)}`, req.batch ?? 1, false);
      if (op.state !== 'done') return this.#end(view, 'failed', `released, but not every node followed: ${failureOf(op)}`);
    }
    this.#end(view, 'done', `${image} is on ${versionLabel(to)}`);
  }

  async #runRollback(view: RolloutView, to: ImageVersion, req: RolloutRequest): Promise<void> {
    const { releases } = this.core.images;
    await releases.setRelease(view.image, to.version, `rollback from ${view.from}`, { rollback: true });
    for (const mac of releases.pinned(view.image)) await releases.unpin(mac);
    const nodes = this.#nodesOf(view.image).filter((n) => this.control().isConnected(n.mac) && n.imageVersion !== versionLabel(to));
    if (nodes.length) {
      const op = await this.#reboot(view, nodes, to, req, `rollback of ${view.image} to ${versionLabel(to)}`, req.batch ?? 1, false);
      if (op.state !== 'done') return this.#end(view, 'failed', `released, but not every node followed: ${failureOf(op)}`);
    }
    this.#end(view, 'done', `${view.image} is back on ${versionLabel(to)}`);
  }

  /** A rolling reboot of `nodes` onto `to` (pinned there first when `pin`), each checked once back. */
  async #reboot(
    view: RolloutView,
    nodes: NodeRecord[],
    to: ImageVersion,
    req: RolloutRequest,
    title: string,
    batch: number,
    pin: boolean,
  ): Promise<OperationView> {
    const label = versionLabel(to);
    const started = this.operations.startRollingReboot({
      nodes: nodes.map((n) => n.mac),
      batch,
      kind: view.kind,
      title,
      ...(req.firmware ? { firmware: true } : {}),
      ...(req.backTimeoutMs ? { backTimeoutMs: req.backTimeoutMs } : {}),
      ...(pin ? { beforeReboot: (n: NodeRecord) => this.core.images.releases.pin(n.mac, view.image, to.version) } : {}),
      checkBack: (n) => {
        const b = n.bootedImage;
        if (!b || `${b.name}@${b.version}` !== label) return `came back on ${n.imageVersion ?? 'an unknown image'}, not ${label}`;
        if (b.health === 'failed') return `the image's health check failed: ${b.healthDetail ?? 'no output'}`;
        return null;
      },
    });
    view.operations.push(started.id);
    return this.operations.wait(started.id);
  }

  #image(image: string) {
    const entry = this.core.images.catalog.get(image);
    if (!entry)
      throw new DispatcherError('DSP_ERR_IMAGE_NOT_FOUND', `no image named "${image}"`, {
        hint: 'dispatcherctl images lists the images served (make image IMAGE=<name> builds one)',
      });
    return entry;
  }

  #notRunning(image: string): void {
    const r = this.#byImage.get(image);
    if (r && r.finishedAt === null)
      throw new DispatcherError('DSP_ERR_NODE_STATE', `a ${r.kind} of ${image} is still running (${r.state}: ${r.message})`, {
        hint: 'wait for it: dispatcherctl images',
      });
  }

  #nodesOf(image: string): NodeRecord[] {
    return this.core.nodes.list().filter((n) => n.enrollment === 'admitted' && this.core.images.assignments.imageOf(n) === image);
  }

  #start(image: string, kind: RolloutView['kind'], from: ImageVersion, to: ImageVersion, state: RolloutState): RolloutView {
    const view: RolloutView = {
      image,
      kind,
      from: versionLabel(from),
      to: versionLabel(to),
      state,
      message: `${kind} of ${image} from ${versionLabel(from)} to ${versionLabel(to)} started`,
      startedAt: this.core.now(),
      finishedAt: null,
      operations: [],
    };
    this.#byImage.set(image, view);
    this.core.events.append({ kind: `image.${kind}`, message: view.message, data: { image, from: view.from, to: view.to } });
    return view;
  }

  #say(view: RolloutView, state: RolloutState, message: string): void {
    view.state = state;
    view.message = message;
    this.core.events.append({
      kind: `image.${view.kind}`,
      message: `${view.kind} of ${view.image}: ${message}`,
      data: { image: view.image, state },
    });
  }

  #end(view: RolloutView, state: RolloutState, message: string): void {
    view.finishedAt = this.core.now();
    this.#say(view, state, message);
  }
}
