/**
 * Which dispatcher leads, chosen by PostgreSQL: a session-level advisory lock held on the
 * leader's connection. PostgreSQL frees it when that session ends (the process died, its
 * machine vanished: the server's TCP keepalives end the session in seconds), and a standby
 * waiting on the same lock gets it at once. Each takeover increments an epoch under the lock.
 *
 * Every write the leader ships to PostgreSQL goes over the session that holds the lock, so a
 * leader that lost its session cannot write: when the database returns it takes the lock
 * again only if the epoch is still its own (nobody led meanwhile); otherwise it has been
 * replaced, and it must stop (`LeadershipLost`).
 */
import type pg from 'pg';
import { hostname } from 'node:os';
import type { Logger } from '../../log.js';
import { connect, type StoreUrl } from './connection.js';
import { META_TABLES_SQL } from './mirror.js';

/** The advisory lock's key ("lilc" in ASCII): one per database. */
export const LEADER_LOCK_KEY = 0x6c696c63;
const HEARTBEAT_MS = 1_000;
const HEARTBEAT_TIMEOUT_MS = 3_000;
const STANDBY_POLL_MS = 1_000;

/** One row: who leads (for standbys' pages) and the epoch each takeover increments. */
const LEADER_TABLE_SQL = [
  'CREATE TABLE IF NOT EXISTS lc_leader (id INTEGER PRIMARY KEY CHECK (id = 1), epoch BIGINT NOT NULL, url TEXT, since BIGINT, host TEXT, pid INTEGER)',
  'INSERT INTO lc_leader (id, epoch) VALUES (1, 0) ON CONFLICT (id) DO NOTHING',
];

export interface LeaderInfo {
  url: string | null;
  epoch: number;
  since: number | null;
  host: string | null;
  pid: number | null;
}

export interface Self {
  /** This dispatcher's URL as operators and nodes reach it. */
  url: string;
}

export class LeadershipLost extends Error {
  constructor(readonly now: LeaderInfo | undefined) {
    super(
      `another dispatcher leads now${now?.url ? ` (${now.url}, epoch ${now.epoch})` : ''}: this one stops; start it again to be a standby`,
    );
  }
}

export class Leadership {
  #client: pg.Client;
  #lost = false;
  #heartbeat: NodeJS.Timeout | undefined;
  #listeners: ((available: boolean) => void)[] = [];
  #closed = false;
  /** Statements in flight on the session: while one runs, it is the heartbeat (its failure says the session is lost). */
  #busy = 0;

  private constructor(
    private readonly store: StoreUrl,
    client: pg.Client,
    readonly epoch: number,
    readonly self: Self,
    readonly since: number,
    private readonly log: Logger,
  ) {
    this.#client = client;
    this.#watch(client);
    this.#heartbeat = setInterval(() => void this.#beat(), HEARTBEAT_MS);
    this.#heartbeat.unref();
  }

  /**
   * Resolves when this dispatcher leads. Until then it is a standby: `onStandby` hears who
   * leads (on each change). A database that cannot be reached is retried, and said once.
   */
  static async waitToLead(
    store: StoreUrl,
    self: Self,
    opts: { log: Logger; onStandby?: (leader: LeaderInfo | undefined) => void; signal?: AbortSignal },
  ): Promise<Leadership> {
    const { log } = opts;
    let saidUnreachable = false;
    for (;;) {
      if (opts.signal?.aborted) throw new Error('stopped while waiting to lead');
      let client: pg.Client | undefined;
      let poller: NodeJS.Timeout | undefined;
      let stopReading: () => Promise<void> = async () => {};
      try {
        client = await connect(store, { applicationName: 'lilcluster dispatcher (leader lock)' });
        saidUnreachable = false;
        let got = (await client.query('SELECT pg_try_advisory_lock($1) AS got', [LEADER_LOCK_KEY])).rows[0]?.got === true;
        if (!got) {
          // A standby: say who leads, follow changes, and wait on the lock itself.
          const reader = new LeaderReader(store);
          let last = '';
          let reading = false;
          const tell = async () => {
            if (reading) return;
            reading = true;
            const info = await reader.read().catch(() => undefined);
            reading = false;
            const key = JSON.stringify(info ?? null);
            if (key !== last) {
              last = key;
              log.info({ leader: info?.url ?? null, epoch: info?.epoch ?? null }, 'standby');
              opts.onStandby?.(info);
            }
          };
          await tell();
          poller = setInterval(() => void tell(), STANDBY_POLL_MS);
          stopReading = () => reader.close();
          await client.query('SELECT pg_advisory_lock($1)', [LEADER_LOCK_KEY]);
          got = true;
        }
        clearInterval(poller);
        await stopReading();
        await client.query('BEGIN');
        for (const sql of [...META_TABLES_SQL, ...LEADER_TABLE_SQL]) await client.query(sql);
        const since = Date.now();
        const r = await client.query(
          'UPDATE lc_leader SET epoch = epoch + 1, url = $1, since = $2, host = $3, pid = $4 WHERE id = 1 RETURNING epoch',
          [self.url, since, hostname(), process.pid],
        );
        await client.query('COMMIT');
        const epoch = Number(r.rows[0].epoch);
        log.info({ epoch, self: self.url }, 'leading');
        return new Leadership(store, client, epoch, self, since, log);
      } catch (err) {
        clearInterval(poller);
        await stopReading();
        await client?.end().catch(() => {});
        if (!saidUnreachable)
          log.warn({ err: (err as Error).message, store: store.display }, 'standby: the database cannot be reached; retrying');
        saidUnreachable = true;
        await sleep(1_000);
      }
    }
  }

  /** The session holding the lock: every shipped write uses it (see the header). */
  get client(): pg.Client {
    return this.#client;
  }

  get available(): boolean {
    return !this.#lost;
  }

  /** Hears `false` when the session is lost and `true` when the lock is held again. */
  onAvailability(fn: (available: boolean) => void): void {
    this.#listeners.push(fn);
  }

  /** Runs one SQL text (a multi-statement text is one transaction) on the lock's session. */
  async run(sql: string): Promise<void> {
    if (this.#lost) throw new Error('the database session is lost');
    this.#busy++;
    try {
      await this.#client.query(sql);
    } catch (err) {
      this.#setLost(err);
      throw err;
    } finally {
      this.#busy--;
    }
  }

  /** Runs `fn` in one transaction on the lock's session. */
  async transaction(fn: (client: pg.Client) => Promise<void>): Promise<void> {
    if (this.#lost) throw new Error('the database session is lost');
    const c = this.#client;
    await c.query('BEGIN');
    try {
      await fn(c);
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {});
      this.#setLost(err);
      throw err;
    }
  }

  /**
   * After the session was lost: reconnects (retrying while the database is away) and takes
   * the lock again if nobody led meanwhile; throws LeadershipLost otherwise.
   */
  async regain(): Promise<void> {
    if (!this.#lost) return;
    let delay = 250;
    for (;;) {
      if (this.#closed) throw new Error('closed');
      let client: pg.Client | undefined;
      try {
        client = await connect(this.store, { applicationName: 'lilcluster dispatcher (leader lock)' });
      } catch {
        await sleep(delay);
        delay = Math.min(delay * 2, 5_000);
        continue;
      }
      try {
        const info = await readLeader(client);
        if (info && info.epoch !== this.epoch) throw new LeadershipLost(info);
        let got = (await client.query('SELECT pg_try_advisory_lock($1) AS got', [LEADER_LOCK_KEY])).rows[0]?.got === true;
        if (!got) {
          // Our own old session may still hold it (the server has not seen it die yet): the
          // epoch is still ours, so nobody else led; end that session and take the lock.
          await client.query(
            `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND granted AND pid <> pg_backend_pid()`,
            [LEADER_LOCK_KEY],
          );
          for (let i = 0; i < 20 && !got; i++) {
            await sleep(100);
            got = (await client.query('SELECT pg_try_advisory_lock($1) AS got', [LEADER_LOCK_KEY])).rows[0]?.got === true;
          }
          if (!got) throw new Error('the leader lock is held by another session');
        }
        const again = await readLeader(client);
        if (!again || again.epoch !== this.epoch) throw new LeadershipLost(again);
        const old = this.#client;
        this.#client = client;
        this.#watch(client);
        old.end().catch(() => {});
        this.#lost = false;
        this.log.info({ epoch: this.epoch }, 'the database is back: still leading');
        for (const fn of this.#listeners) fn(true);
        return;
      } catch (err) {
        await client.end().catch(() => {});
        if (err instanceof LeadershipLost) throw err;
        await sleep(delay);
        delay = Math.min(delay * 2, 5_000);
      }
    }
  }

  /** Ends the session: the lock is free for a standby. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#heartbeat);
    await this.#client.end().catch(() => {});
  }

  #watch(client: pg.Client): void {
    const lost = (err?: unknown) => {
      if (client === this.#client) this.#setLost(err ?? new Error('the database session ended'));
    };
    client.on('error', lost);
    client.on('end', () => lost());
  }

  async #beat(): Promise<void> {
    // A `SELECT 1` would queue behind a long ship and time out on a healthy database.
    if (this.#lost || this.#closed || this.#busy > 0) return;
    const client = this.#client;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        client.query('SELECT 1'),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`the database did not answer in ${HEARTBEAT_TIMEOUT_MS} ms`)), HEARTBEAT_TIMEOUT_MS);
        }),
      ]);
    } catch (err) {
      if (client === this.#client) this.#setLost(err);
    } finally {
      clearTimeout(timer);
    }
  }

  #setLost(err: unknown): void {
    if (this.#lost || this.#closed) return;
    this.#lost = true;
    this.log.error({ err: (err as Error)?.message }, 'the database session is lost: changes wait until it returns');
    for (const fn of this.#listeners) fn(false);
  }
}

async function readLeader(client: pg.Client): Promise<LeaderInfo | undefined> {
  const exists = await client.query("SELECT to_regclass('public.lc_leader') IS NOT NULL AS ok");
  if (!exists.rows[0]?.ok) return undefined;
  const r = await client.query('SELECT url, epoch, since, host, pid FROM lc_leader WHERE id = 1');
  const row = r.rows[0] as { url: string | null; epoch: number; since: number | null; host: string | null; pid: number | null } | undefined;
  return row
    ? { url: row.url, epoch: Number(row.epoch), since: row.since === null ? null : Number(row.since), host: row.host, pid: row.pid }
    : undefined;
}

/**
 * A standby's view of who leads, read over one session of its own (the lock's session is
 * blocked waiting on the lock); a failed session is dropped and the next read opens another.
 */
class LeaderReader {
  #client: pg.Client | undefined;
  #closed = false;

  constructor(private readonly store: StoreUrl) {}

  async read(): Promise<LeaderInfo | undefined> {
    if (this.#closed) return undefined;
    try {
      if (!this.#client) {
        const client = await connect(this.store, { applicationName: 'lilcluster dispatcher (standby)' });
        if (this.#closed) {
          await client.end().catch(() => {});
          return undefined;
        }
        this.#client = client;
      }
      return await readLeader(this.#client);
    } catch (err) {
      const failed = this.#client;
      this.#client = undefined;
      await failed?.end().catch(() => {});
      throw err;
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    const client = this.#client;
    this.#client = undefined;
    await client?.end().catch(() => {});
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
