/**
 * A rack with two head machines, for the standby-dispatcher tests: one segment (PxeLab's
 * bridge, in the rack namespace, with QEMU machines on its taps), two head namespaces on it
 * (a veth each, 10.<subnet>.0.2 and .3), each running a dispatcher and keepalived, a throwaway
 * PostgreSQL both dispatchers share (in the rack namespace, 10.<subnet>.0.254), and a virtual
 * IP, 10.<subnet>.0.1, that keepalived moves to whichever head's dispatcher leads.
 *
 *   const ha = await HaLab.create({ area: 'failover', subnet: 71 });
 *   await ha.postgres();
 *   for (const h of ha.heads) await ha.startKeepalived(h);           // VIP follows the leader
 *   await ha.startDispatcher(ha.heads[0]!, { cluster });             // leads
 *   await ha.startDispatcher(ha.heads[1]!, { cluster });             // standby
 *   await ha.until('VIP on a', async () => (await ha.vipHolder()) === ha.heads[0] || undefined);
 *   const m = await ha.rack.machine({ name: 'node1' }); await m.powerOn();   // PXE from the VIP
 *   await ha.rack.nodeUp('node1');                                    // dispatcherctl via the VIP
 *   await ha.cleanup();
 *
 * The dispatchers advertise the VIP (--advertise-address: DHCP server identifier, next-server
 * and boot URLs) and name every head in --peers, so the boot script's lc.dispatcher= lists
 * the VIP and both heads. Both data dirs start with the same secrets (admin and enrollment
 * tokens, the identity key agents verify): a standby must be the same dispatcher to the nodes.
 *
 * keepalived (Debian's package) runs in each head namespace from a private dir (config, check
 * script, pid files), VRRP by unicast between the heads; `keepalivedConf` writes the same
 * configuration dispatcher/README.md shows. Nothing is created in the root namespace.
 */
import { copyFileSync, chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ENROLL_TOKEN_FILE,
  ADMIN_TOKEN_FILE,
  IDENTITY_KEY_FILE,
  IDENTITY_PUB_FILE,
  loadOrCreateSecrets,
} from '../../dispatcher/src/trust/secrets.js';
import { spawnDispatcher, type DispatcherProcess } from './dispatcher.js';
import type { Iface, LabProcess, Netns } from './netns.js';
import { AGENT_BIN, CTL_BIN } from './paths.js';
import { startPostgres, type Postgres } from './postgres.js';
import { ARTIFACTS, E2E_IMAGE, PxeLab } from './pxe-lab.js';

export const HA_HTTP_PORT = 8080;
/** VRRP router id of the lab's VIP (any 1-255 the segment does not use). */
const VIRTUAL_ROUTER_ID = 42;

export interface HaLabOptions {
  /** Names the lab's namespaces (a-z0-9, at most 16). */
  area: string;
  /** The segment is 10.<subnet>.0.0/24. */
  subnet: number;
}

/** One head machine: a namespace on the segment with its dispatcher and keepalived. */
export interface Head {
  readonly name: string;
  readonly ns: Netns;
  /** Its interface on the segment. */
  readonly iface: Iface;
  readonly address: string;
  /** http://<address>:8080: how nodes reach this dispatcher (its entry in --peers). */
  readonly url: string;
  readonly dataDir: string;
  dispatcher?: DispatcherProcess;
  keepalived?: LabProcess;
  /** keepalived's private dir (config, check script, pid files). */
  keepalivedDir?: string;
}

/** What GET /api/v1/leader says. */
export interface LeaderView {
  role: 'leader' | 'standby';
  self: string;
  leader: { url: string; epoch: number } | null;
}

export interface KeepalivedConfOptions {
  /** The head's name (router_id). */
  name: string;
  iface: string;
  /** This head's address and the other heads' (VRRP by unicast; leave out for multicast). */
  self?: string;
  peers?: string[];
  /** CIDR of the VIP, e.g. 10.42.0.1/24. */
  vip: string;
  /** The leader check (a script that exits 0 when this head's dispatcher leads); none: VRRP alone. */
  checkScript?: string;
  routerId?: number;
}

/**
 * keepalived.conf for one head: the VIP is held by the head whose dispatcher leads. The check
 * adds 50 to the priority of the head that leads, so that one wins the election (a standby's
 * check fails and it keeps its base priority); both heads start as BACKUP with equal base
 * priorities, so a head coming back does not take the VIP from a leader.
 */
export function keepalivedConf(o: KeepalivedConfOptions): string {
  const unicast =
    o.self && o.peers?.length ? `  unicast_src_ip ${o.self}\n  unicast_peer {\n${o.peers.map((p) => `    ${p}\n`).join('')}  }\n` : '';
  const check = o.checkScript
    ? `vrrp_script lilcluster_leader {\n  script "${o.checkScript}"\n  interval 1\n  timeout 2\n  rise 1\n  fall 1\n  weight 50\n}\n\n`
    : '';
  return (
    `global_defs {\n  router_id ${o.name}\n  script_user root\n  enable_script_security\n}\n\n` +
    check +
    `vrrp_instance lilcluster {\n  state BACKUP\n  interface ${o.iface}\n  virtual_router_id ${o.routerId ?? VIRTUAL_ROUTER_ID}\n` +
    `  priority 100\n  advert_int 1\n${unicast}  virtual_ipaddress {\n    ${o.vip} dev ${o.iface}\n  }\n` +
    (o.checkScript ? '  track_script {\n    lilcluster_leader\n  }\n' : '') +
    '}\n'
  );
}

/** The check keepalived runs: this head's dispatcher says it holds the lock. */
export function leaderCheckScript(port = HA_HTTP_PORT): string {
  return `#!/bin/sh\n# Exit 0 only while the dispatcher on this head leads: the VIP follows the lock.\n/usr/bin/curl -fsS -m 1 http://127.0.0.1:${port}/api/v1/leader | grep -q '"role": *"leader"'\n`;
}

export class HaLab {
  /** The promise, not the server: two dispatchers started at once must get one database. */
  #pg: Promise<Postgres> | undefined;
  #clients = 0;

  private constructor(
    readonly rack: PxeLab,
    readonly heads: Head[],
    readonly subnet: number,
    readonly area: string,
  ) {}

  static async create(opts: HaLabOptions): Promise<HaLab> {
    // The rack namespace keeps .254 for itself (PostgreSQL, curl); .1 is the VIP, which PxeLab's
    // url and dispatcherctl then reach: whichever head leads answers.
    const rack = await PxeLab.create({ area: opts.area, subnet: opts.subnet, bridgeAddress: `10.${opts.subnet}.0.254/24` });
    const heads: Head[] = [];
    try {
      loadOrCreateSecrets(rack.dataDir);
      for (const [i, name] of ['a', 'b'].entries()) {
        const ns = await rack.lab.namespace(`head${name}`);
        const address = `10.${opts.subnet}.0.${i + 2}`;
        const [iface, port] = await rack.lab.veth({ ns, address: `${address}/24` }, { ns: rack.ns });
        await rack.lab.attach(port, rack.bridge);
        // Head a's data dir is the rack's (dispatcherctl reads its admin token there). The store
        // hands the first leader's secrets to later leaders; b starts with the same ones so the
        // lab's tools and agents can read them from a's dir whichever head leads first.
        const dataDir = i === 0 ? rack.dataDir : mkdtempSync(join(tmpdir(), `lc-${opts.area}-head${name}-`));
        if (i > 0)
          for (const f of [ADMIN_TOKEN_FILE, ENROLL_TOKEN_FILE, IDENTITY_KEY_FILE, IDENTITY_PUB_FILE]) {
            copyFileSync(join(rack.dataDir, f), join(dataDir, f));
            chmodSync(join(dataDir, f), 0o600);
          }
        heads.push({ name, ns, iface, address, url: `http://${address}:${HA_HTTP_PORT}`, dataDir });
      }
    } catch (err) {
      await rack.cleanup();
      throw err;
    }
    return new HaLab(rack, heads, opts.subnet, opts.area);
  }

  get vip(): string {
    return `10.${this.subnet}.0.1`;
  }

  get vipUrl(): string {
    return `http://${this.vip}:${HA_HTTP_PORT}`;
  }

  /** Every dispatcher's URL as nodes reach it (--peers). */
  get peers(): string[] {
    return this.heads.map((h) => h.url);
  }

  /** What an agent is given: the VIP first, then every head. */
  get agentDispatchers(): string {
    return [this.vipUrl, ...this.peers].join(',');
  }

  /** The shared database, in the rack namespace on the segment (started once). */
  async postgres(): Promise<Postgres> {
    this.#pg ??= startPostgres({ netns: this.rack.ns.name, listen: `10.${this.subnet}.0.254` });
    return this.#pg;
  }

  /** keepalived on a head: VRRP by unicast to the other heads; `check` false: the VIP without the leader check. */
  async startKeepalived(head: Head, opts: { check?: boolean } = {}): Promise<LabProcess> {
    head.keepalivedDir ??= mkdtempSync(join(tmpdir(), `lc-${this.area}-keepalived-${head.name}-`));
    const dir = head.keepalivedDir;
    const script = join(dir, 'leader-check.sh');
    writeFileSync(script, leaderCheckScript(), { mode: 0o755 });
    const conf = join(dir, 'keepalived.conf');
    writeFileSync(
      conf,
      keepalivedConf({
        name: `${this.area}-${head.name}`,
        iface: head.iface.name,
        self: head.address,
        peers: this.heads.filter((h) => h !== head).map((h) => h.address),
        vip: `${this.vip}/24`,
        ...(opts.check === false ? {} : { checkScript: script }),
      }),
    );
    head.keepalived = head.ns.spawn('keepalived', [
      '--dont-fork',
      '--log-console',
      '--log-detail',
      '--vrrp',
      '--use-file',
      conf,
      '--pid',
      join(dir, 'keepalived.pid'),
      '--vrrp_pid',
      join(dir, 'vrrp.pid'),
      '--checkers_pid',
      join(dir, 'checkers.pid'),
    ]);
    await head.keepalived.waitForOutput(/Entering BACKUP STATE|Entering FAULT STATE|Entering MASTER STATE/, 15_000);
    return head.keepalived;
  }

  /** kill -9 of a head's keepalived, its VRRP process too (as a crashed head): the VIP stays on its interface. */
  async killKeepalived(head: Head): Promise<void> {
    if (!head.keepalived || !head.keepalivedDir) return;
    try {
      process.kill(Number(readFileSync(join(head.keepalivedDir, 'vrrp.pid'), 'utf8').trim()), 'SIGKILL');
    } catch {
      /* already gone */
    }
    await head.keepalived.stop('SIGKILL');
  }

  /** The head whose interface holds the VIP now (the first, should two). */
  async vipHolder(): Promise<Head | undefined> {
    for (const h of this.heads) {
      const r = await h.ns.exec('ip', ['-4', '-o', 'addr', 'show', 'dev', h.iface.name]);
      if (r.stdout.includes(` ${this.vip}/`)) return h;
    }
    return undefined;
  }

  /**
   * Starts a head's dispatcher on the shared database: full DHCP on its interface, the VIP
   * advertised, every head in --peers. Resolves once it serves as the leader or stands by.
   */
  async startDispatcher(head: Head, opts: { cluster?: string; args?: string[] } = {}): Promise<DispatcherProcess> {
    const pg = await this.postgres();
    const d = spawnDispatcher({
      ns: head.ns,
      dataDir: head.dataDir,
      port: HA_HTTP_PORT,
      heartbeatSeconds: 2,
      tftp: true,
      boot: { imageDir: E2E_IMAGE, pxeDir: 'pxe/bin' },
      ...(opts.cluster !== undefined ? { cluster: opts.cluster } : {}),
      args: [
        '--tftp-port',
        '69',
        '--interface',
        head.iface.name,
        '--dhcp',
        'full',
        '--range',
        `10.${this.subnet}.0.100-10.${this.subnet}.0.199`,
        '--advertise-address',
        this.vip,
        '--store',
        pg.url,
        '--peers',
        this.peers.join(','),
        ...(opts.args ?? []),
      ],
    });
    head.dispatcher = d;
    // A leader is up once every service is (its HTTP port answers the agents then).
    await d.waitForLog((l) => l.msg === 'dispatcher started' || l.msg === 'standby', 60_000);
    return d;
  }

  /** GET /api/v1/leader on a head, from inside it; undefined when nothing answers. */
  async leaderView(head: Head): Promise<LeaderView | undefined> {
    const r = await head.ns.exec('curl', ['-sS', '-m', '2', `http://127.0.0.1:${HA_HTTP_PORT}/api/v1/leader`], { allowFailure: true });
    if (r.code !== 0) return undefined;
    try {
      return JSON.parse(r.stdout) as LeaderView;
    } catch {
      return undefined;
    }
  }

  /** A JSON API call with the admin token, from the rack namespace, through the VIP or to one head; undefined when it fails. */
  async api<T>(path: string, at: Head | 'vip' = 'vip'): Promise<T | undefined> {
    const token = readFileSync(join(this.heads[0]!.dataDir, ADMIN_TOKEN_FILE), 'utf8').trim();
    const base = at === 'vip' ? this.vipUrl : at.url;
    const r = await this.rack.ns.exec('curl', ['-fsS', '-m', '5', '-H', `authorization: Bearer ${token}`, `${base}${path}`], {
      allowFailure: true,
    });
    if (r.code !== 0) return undefined;
    return (path.includes('format=jsonl') ? r.stdout : JSON.parse(r.stdout)) as T;
  }

  /** A namespace on the segment with an address of its own (.<host>), for agents or a DHCP client. */
  async client(role: string, host?: number): Promise<{ ns: Netns; iface: Iface }> {
    const ns = await this.rack.lab.namespace(role);
    const n = ++this.#clients;
    const [iface, port] = await this.rack.lab.veth(
      {
        ns,
        ...(host !== undefined ? { address: `10.${this.subnet}.0.${host}/24` } : {}),
        mac: `02:1c:00:${this.subnet.toString(16).padStart(2, '0')}:00:${n.toString(16).padStart(2, '0')}`,
      },
      { ns: this.rack.ns },
    );
    await this.rack.lab.attach(port, this.rack.bridge);
    return { ns, iface };
  }

  /** A real node agent (dist/bin/node-agent.mjs) in `ns`, enrolled, knowing every dispatcher. */
  startAgent(ns: Netns, mac: string, extra: string[] = []): LabProcess {
    const dataDir = this.heads[0]!.dataDir;
    const work = mkdtempSync(join(tmpdir(), `lc-${this.area}-agent-`));
    return ns.spawn(process.execPath, [
      AGENT_BIN,
      '--dispatcher',
      this.agentDispatchers,
      '--enroll-token',
      readFileSync(join(dataDir, ENROLL_TOKEN_FILE), 'utf8').trim(),
      '--dispatcher-key',
      join(dataDir, IDENTITY_PUB_FILE),
      '--mac',
      mac,
      '--work-dir',
      work,
      ...extra,
    ]);
  }

  /** dispatcherctl against one head directly (not through the VIP). */
  ctlAt(head: Head, ...args: string[]) {
    return head.ns.exec(process.execPath, [CTL_BIN, '--url', `http://127.0.0.1:${HA_HTTP_PORT}`, '--data-dir', head.dataDir, ...args], {
      timeoutMs: 120_000,
      allowFailure: true,
    });
  }

  until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000, everyMs = 100): Promise<T> {
    return this.rack.until(what, probe, timeoutMs, everyMs).catch((err: Error) => {
      throw new Error(`${err.message}\n${this.diagnostics()}`, { cause: err });
    });
  }

  diagnostics(): string {
    return this.heads
      .map(
        (h) =>
          `--- head ${h.name} dispatcher\n${h.dispatcher?.output().slice(-3000) ?? '(not started)'}\n--- head ${h.name} keepalived\n${h.keepalived?.output().slice(-1500) ?? '(not started)'}`,
      )
      .join('\n');
  }

  /** Stops everything (machines, dispatchers, keepalived: the lab's processes), keeps the logs in test/artifacts. */
  async cleanup(): Promise<void> {
    mkdirSync(ARTIFACTS, { recursive: true });
    for (const h of this.heads) {
      if (h.dispatcher) writeFileSync(join(ARTIFACTS, `${this.area}-head${h.name}-dispatcher.log`), h.dispatcher.output());
      if (h.keepalived) writeFileSync(join(ARTIFACTS, `${this.area}-head${h.name}-keepalived.log`), h.keepalived.output());
    }
    for (const h of this.heads) await h.dispatcher?.stop('SIGKILL');
    await this.rack.cleanup();
    await (await this.#pg?.catch(() => undefined))?.destroy();
  }
}
