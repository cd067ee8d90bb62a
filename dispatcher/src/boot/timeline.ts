/**
 * The boot timeline: how far each machine's boots got, stage by stage, with times.
 * PXE is hard to debug; this answers "why did that one not boot". A boot starts at the
 * firmware's DHCP DISCOVER (or at the first record after a long silence) and ends with the
 * agent's hello. Records are group-committed; the API reads them per MAC.
 */
import type { Db, Migration } from '../store/database.js';
import type { GroupCommit } from '../store/group-commit.js';
import type { Mac } from '../nodes/mac.js';

export const timelineMigrations: Migration[] = [
  {
    name: 'boot/001-timeline',
    sql: `CREATE TABLE boot_stages (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      mac TEXT NOT NULL,
      boot INTEGER NOT NULL,
      ts INTEGER NOT NULL,
      stage TEXT NOT NULL,
      detail TEXT
    );
    CREATE INDEX boot_stages_mac ON boot_stages(mac, boot, id);`,
  },
];

/** Every stage a boot passes through, in the usual order. */
export const BOOT_STAGES = [
  'dhcp.discover',
  'dhcp.offer',
  'dhcp.request',
  'dhcp.ack',
  'dhcp.nak',
  'dhcp.ignored',
  'proxy.offer',
  'proxy.ack',
  'tftp.sent',
  'tftp.failed',
  'http.firststage',
  'http.script',
  'http.kernel',
  'http.initrd',
  'http.root',
  'http.failed',
  /** The node's agent was told to reboot by the firmware: the last stage of its boot (reason: why not kexec). */
  'reboot.firmware',
  /** The first stage of a boot started by kexec from the previous one (no firmware, no PXE). */
  'reboot.kexec',
  'agent.hello',
] as const;
export type BootStage = (typeof BOOT_STAGES)[number];

export interface BootStageRecord {
  mac: Mac;
  /** Boot number of this MAC (1, 2, ...): stages of one boot share it. */
  boot: number;
  ts: number;
  stage: BootStage;
  /** Stage-specific facts: file, bytes, durationMs, ip, arch, reason... */
  detail: Record<string, unknown> | null;
}

/** A new boot is assumed when a MAC is silent this long, even without a DISCOVER. */
const NEW_BOOT_AFTER_MS = 10 * 60_000;

export class BootTimeline {
  readonly #current = new Map<Mac, { boot: number; lastTs: number; stages: BootStageRecord[] }>();
  readonly #insert;
  readonly #maxBoot;
  readonly #listeners = new Set<(r: BootStageRecord) => void>();

  constructor(
    private readonly db: Db,
    private readonly commits: GroupCommit,
    private readonly now: () => number = Date.now,
  ) {
    this.#insert = db.prepare('INSERT INTO boot_stages (mac, boot, ts, stage, detail) VALUES (?, ?, ?, ?, ?)');
    this.#maxBoot = db.prepare('SELECT max(boot) FROM boot_stages WHERE mac = ?').pluck();
  }

  /**
   * Records a stage. `dhcp.discover` from a firmware (not iPXE) starts a new boot unless the
   * current one has only just started (firmware retries DISCOVER several times).
   */
  record(mac: Mac, stage: BootStage, detail: Record<string, unknown> | null = null, opts: { newBoot?: boolean } = {}): BootStageRecord {
    const t = this.now();
    let cur = this.#current.get(mac);
    if (!cur) {
      const last = (this.#maxBoot.get(mac) as number | null) ?? 0;
      cur = { boot: last, lastTs: 0, stages: [] };
      this.#current.set(mac, cur);
    }
    const stale = t - cur.lastTs > NEW_BOOT_AFTER_MS;
    const restarted = opts.newBoot === true && cur.stages.some((s) => s.stage !== 'dhcp.discover' && s.stage !== 'dhcp.offer');
    if (cur.boot === 0 || stale || restarted) {
      cur.boot++;
      cur.stages = [];
    }
    cur.lastTs = t;
    const rec: BootStageRecord = { mac, boot: cur.boot, ts: t, stage, detail };
    cur.stages.push(rec);
    if (cur.stages.length > 200) cur.stages.splice(0, cur.stages.length - 200);
    const json = detail ? JSON.stringify(detail) : null;
    this.commits
      .run(() => this.#insert.run(mac, rec.boot, t, stage, json))
      .catch(() => {
        /* reported through GroupCommit.failure */
      });
    for (const l of this.#listeners) l(rec);
    return rec;
  }

  /** Stages of a MAC's boots, newest boot last; `boots` limits how many boots. */
  list(mac: Mac, boots = 5): BootStageRecord[] {
    this.commits.flush();
    const rows = this.db
      .prepare(
        `SELECT mac, boot, ts, stage, detail FROM boot_stages WHERE mac = ? AND boot > coalesce((SELECT max(boot) FROM boot_stages WHERE mac = ?), 0) - ? ORDER BY id`,
      )
      .all(mac, mac, boots) as { mac: string; boot: number; ts: number; stage: string; detail: string | null }[];
    return rows.map((r) => ({
      mac: r.mac as Mac,
      boot: r.boot,
      ts: r.ts,
      stage: r.stage as BootStage,
      detail: r.detail ? JSON.parse(r.detail) : null,
    }));
  }

  /** Drops a forgotten node's boots (memory now, rows with the next commit). */
  async forget(mac: Mac): Promise<void> {
    this.#current.delete(mac);
    await this.commits.run(() => this.db.prepare('DELETE FROM boot_stages WHERE mac = ?').run(mac));
  }

  /** The newest stage of a MAC's current boot, from memory. */
  latest(mac: Mac): BootStageRecord | undefined {
    return this.#current.get(mac)?.stages.at(-1);
  }

  subscribe(listener: (r: BootStageRecord) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}
