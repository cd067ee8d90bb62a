/**
 * Operator commands in flight on one agent connection: each `control` message waits for its
 * `control-ack` (reboot, poweroff, cancel: done then) or its `control-done` (inspect, exec),
 * with exec output passed on as it streams in, and a deadline. The hub owns the socket; this
 * owns the bookkeeping.
 */
import { DispatcherError } from '../errors.js';
import type { ControlCommand, ControlOutcome } from './control-contract.js';
import type { AgentMessage } from '../protocol/messages.js';

export type ControlReply = Extract<AgentMessage, { type: 'control-ack' | 'control-output' | 'control-done' }>;
export type OutputListener = (stream: 'stdout' | 'stderr', chunk: string) => void;

interface Pending {
  cmd: ControlCommand;
  sentAt: number;
  ackMs: number | undefined;
  timer: NodeJS.Timeout;
  onOutput: OutputListener | undefined;
  resolve: (o: ControlOutcome) => void;
  reject: (err: Error) => void;
}

/** Commands that complete with their acknowledgement; the others wait for control-done. */
const DONE_ON_ACK: ReadonlySet<ControlCommand['kind']> = new Set(['reboot', 'poweroff', 'cancel']);

const msSince = (t: number): number => Math.round((performance.now() - t) * 100) / 100;

export class CommandTracker {
  readonly #pending = new Map<number, Pending>();
  /** What the node is about to do when its connection drops: an acknowledged reboot or poweroff. */
  fate: 'rebooting' | 'off' | undefined;

  constructor(private readonly nodeLabel: () => string) {}

  /**
   * Registers command `id` and sends it with `send` (false: not sent). Resolves with the
   * outcome; rejects DSP_ERR_TIMEOUT after `timeoutMs`, DSP_ERR_NODE_OFFLINE if not sent.
   */
  start(
    id: number,
    cmd: ControlCommand,
    timeoutMs: number,
    onOutput: OutputListener | undefined,
    send: () => boolean,
  ): Promise<ControlOutcome> {
    return new Promise<ControlOutcome>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new DispatcherError('DSP_ERR_TIMEOUT', `${this.nodeLabel()} did not answer ${cmd.kind} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { cmd, sentAt: performance.now(), ackMs: undefined, timer, onOutput, resolve, reject });
      if (!send()) {
        clearTimeout(timer);
        this.#pending.delete(id);
        reject(new DispatcherError('DSP_ERR_NODE_OFFLINE', `the agent of ${this.nodeLabel()} is not connected`));
      }
    });
  }

  onReply(msg: ControlReply): void {
    const p = this.#pending.get(msg.id);
    if (!p) return; // timed out already, or not ours
    switch (msg.type) {
      case 'control-ack':
        p.ackMs = msSince(p.sentAt);
        if (msg.ok && p.cmd.kind === 'reboot') this.fate = 'rebooting';
        if (msg.ok && p.cmd.kind === 'poweroff') this.fate = 'off';
        // A reboot with a kexec plan is done when the agent says which path it takes.
        if (!msg.ok || (DONE_ON_ACK.has(p.cmd.kind) && !(p.cmd.kind === 'reboot' && p.cmd.kexec)))
          this.#settle(msg.id, p, { ok: msg.ok, ackMs: p.ackMs, ...(msg.error ? { error: msg.error } : {}) });
        return;
      case 'control-output':
        p.onOutput?.(msg.stream, msg.data);
        return;
      case 'control-done':
        this.#settle(msg.id, p, {
          ok: msg.ok,
          ackMs: p.ackMs ?? msSince(p.sentAt),
          ...(msg.result !== undefined ? { result: msg.result } : {}),
          ...(msg.error ? { error: msg.error } : {}),
        });
        return;
      default:
        return assertNever(msg);
    }
  }

  /** The connection is gone: commands still waiting fail, except power commands the node acknowledged (it is doing them). */
  connectionClosed(): void {
    for (const [id, p] of this.#pending) {
      clearTimeout(p.timer);
      this.#pending.delete(id);
      if (p.ackMs !== undefined && DONE_ON_ACK.has(p.cmd.kind)) {
        // A kexec reboot may leave before its control-done: it is rebooting, by which path unknown.
        if (p.cmd.kind === 'reboot' && p.cmd.kexec) p.resolve({ ok: true, ackMs: p.ackMs });
        continue;
      }
      p.reject(new DispatcherError('DSP_ERR_NODE_OFFLINE', `the agent of ${this.nodeLabel()} disconnected before finishing the command`));
    }
  }

  #settle(id: number, p: Pending, outcome: ControlOutcome): void {
    clearTimeout(p.timer);
    this.#pending.delete(id);
    p.resolve(outcome);
  }
}

function assertNever(x: never): never {
  throw new Error(`unhandled control reply ${(x as { type?: string }).type}`);
}
