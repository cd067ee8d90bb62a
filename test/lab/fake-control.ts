/**
 * A NodeControl fake for tests of the operator surface that need no agent processes: agents
 * "connected" in memory, with live figures, that acknowledge commands after `ackDelayMs`,
 * stream exec output, and on reboot drop their connection and come back (a hello through the
 * registry, as the hub does) after `rebootMs`. The real AgentHub is tested with real agents.
 */
import type { AgentLiveStatus, ControlCommand, ControlOutcome, NodeControl } from '../../dispatcher/src/agents/control-contract.js';
import { DispatcherError } from '../../dispatcher/src/errors.js';
import type { Mac } from '../../dispatcher/src/nodes/mac.js';
import type { NodeRegistry } from '../../dispatcher/src/nodes/registry.js';

export interface FakeAgentOptions {
  load1?: number;
  memUsedMiB?: number;
  memTotalMiB?: number;
  slots?: number;
  running?: AgentLiveStatus['running'];
}

export class FakeControl implements NodeControl {
  readonly live = new Map<Mac, AgentLiveStatus>();
  readonly draining = new Set<Mac>();
  readonly sent: { mac: Mac; cmd: ControlCommand }[] = [];
  ackDelayMs = 1;
  rebootMs = 50;
  /** Commands the fake agents refuse (ack ok: false). */
  refuse = new Set<ControlCommand['kind']>();

  constructor(private readonly nodes: NodeRegistry) {}

  /** An agent says hello: the node is registered (admitted) and connected. */
  connect(mac: Mac, opts: FakeAgentOptions = {}): void {
    this.nodes.admit(mac);
    const now = Date.now();
    this.live.set(mac, {
      connectedAt: now,
      lastHeartbeat: now,
      load1: opts.load1 ?? 0.1,
      memUsedMiB: opts.memUsedMiB ?? 300,
      memTotalMiB: opts.memTotalMiB ?? 4096,
      uptimeS: 60,
      slots: opts.slots ?? 4,
      running: opts.running ?? [],
    });
    this.nodes.recordHello(mac, {
      uuid: `uuid-${mac}`,
      ip: `10.42.0.${parseInt(mac.slice(-2), 16)}`,
      agentVersion: '0.1.0-test',
      imageVersion: 'img-1',
      inventory: {
        hostname: 'n',
        cpu: { model: 'QEMU Virtual CPU', cores: 4, physicalCores: 4, speedGHz: 2 },
        memoryMiB: opts.memTotalMiB ?? 4096,
        system: { manufacturer: 'QEMU', model: 'Standard PC', uuid: `uuid-${mac}`, serial: '' },
        os: { kernel: '6.1', distro: 'lilcluster', arch: 'x64' },
      },
    });
    this.nodes.setState(mac, opts.running?.length ? 'busy' : 'ready', 'agent connected');
  }

  disconnect(mac: Mac, why = 'connection closed'): void {
    if (!this.live.delete(mac)) return;
    this.nodes.setState(mac, 'lost', why);
  }

  isConnected(mac: Mac): boolean {
    return this.live.has(mac);
  }
  connected(): Mac[] {
    return [...this.live.keys()];
  }
  setDraining(mac: Mac, draining: boolean): void {
    if (draining) this.draining.add(mac);
    else this.draining.delete(mac);
  }
  isDraining(mac: Mac): boolean {
    return this.draining.has(mac);
  }
  liveStatus(mac: Mac): AgentLiveStatus | undefined {
    const l = this.live.get(mac);
    return l ? { ...l, running: l.running.map((r) => ({ ...r })) } : undefined;
  }

  async send(
    mac: Mac,
    cmd: ControlCommand,
    opts: { timeoutMs?: number; onOutput?: (stream: 'stdout' | 'stderr', chunk: string) => void } = {},
  ): Promise<ControlOutcome> {
    if (!this.live.has(mac)) throw new DispatcherError('DSP_ERR_NODE_OFFLINE', `the agent of ${mac} is not connected`);
    this.sent.push({ mac, cmd });
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, this.ackDelayMs));
    const ackMs = performance.now() - t0;
    if (this.refuse.has(cmd.kind)) return { ok: false, ackMs, error: `${cmd.kind} refused by the test` };
    switch (cmd.kind) {
      case 'reboot':
        setTimeout(() => {
          this.live.delete(mac);
          this.nodes.setState(mac, 'rebooting', 'connection closed');
          setTimeout(() => this.connect(mac), this.rebootMs);
        }, 1);
        return { ok: true, ackMs };
      case 'poweroff':
        setTimeout(() => this.disconnect(mac), 1);
        return { ok: true, ackMs };
      case 'inspect':
        return {
          ok: true,
          ackMs,
          result: { cpu: { model: 'QEMU Virtual CPU', cores: 4 }, load: { avg1: 0.1 }, temperatures: { main: 41 } },
        };
      case 'exec': {
        const argv = Array.isArray(cmd.command) ? cmd.command : ['sh', '-c', cmd.command];
        opts.onOutput?.('stdout', `ran ${argv.join(' ')}\n`);
        opts.onOutput?.('stderr', 'a line on stderr\n');
        const code = argv.includes('fail') ? 3 : 0;
        return { ok: true, ackMs, result: { exitCode: code, signal: null, durationMs: 2 } };
      }
      case 'cancel':
        return { ok: true, ackMs };
    }
  }
}
