/**
 * PostgreSQL connections for the shared store: the connection string checked up front (a
 * wrong one is said in one line, without its password), TCP keepalives both ways (a leader
 * whose machine vanished loses its lock in seconds, not at the kernel's two hours), and
 * numbers read back as numbers.
 */
import pg from 'pg';
import { DispatcherError } from '../../errors.js';

export interface StoreUrl {
  /** The string as given (with its password): only for pg. */
  url: string;
  /** The same without the password, for logs and messages. */
  display: string;
}

/** Checks a `--store` value: postgres:// or postgresql://, a host and a database. */
export function parseStoreUrl(text: string): StoreUrl {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new DispatcherError('DSP_ERR_STORE_URL', `--store: "${redactText(text)}" is not a URL`, {
      hint: 'give postgres://USER:PASSWORD@HOST:PORT/DATABASE, or leave --store out for the embedded SQLite database',
    });
  }
  const display = redactUrl(u);
  const bad = (why: string): never => {
    throw new DispatcherError('DSP_ERR_STORE_URL', `--store ${display}: ${why}`, {
      hint: 'give postgres://USER:PASSWORD@HOST:PORT/DATABASE, or leave --store out for the embedded SQLite database',
    });
  };
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') bad(`the scheme must be postgres:// (not ${u.protocol}//)`);
  if (!u.hostname && !u.searchParams.get('host')) bad('no host');
  if (u.port && !(Number(u.port) > 0 && Number(u.port) < 65536)) bad(`port ${u.port} is not a port`);
  if (u.pathname.length <= 1) bad('no database name (…/DATABASE)');
  return { url: text, display };
}

function redactUrl(u: URL): string {
  const c = new URL(u.href);
  if (c.password) c.password = '***';
  return c.href;
}

function redactText(text: string): string {
  return text.replace(/(:\/\/[^:/@]*:)[^@]*@/, '$1***@').slice(0, 200);
}

/** Numbers come back from NUMERIC and BIGINT columns as JS numbers (the store keeps SQLite's). */
const numeric = (v: string) => Number(v);
const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === pg.types.builtins.NUMERIC || oid === pg.types.builtins.INT8
      ? numeric
      : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
};

export interface ConnectOptions {
  /** Shown in pg_stat_activity. */
  applicationName: string;
  connectTimeoutMs?: number;
}

/** A connected client; a refused log-in or an unreachable server is a DSP_ERR_STORE_CONNECT naming why. */
export async function connect(store: StoreUrl, opts: ConnectOptions): Promise<pg.Client> {
  const client = new pg.Client({
    connectionString: store.url,
    application_name: opts.applicationName,
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 5_000,
    keepAlive: true,
    keepAliveInitialDelayMillis: 2_000,
    // The server's side: a session whose client vanished ends (and frees its locks) in ~10 s.
    options: '-c tcp_keepalives_idle=4 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3',
    types,
  });
  // An error on an idle client (the server went away) must not crash the process: the
  // next query fails and the owner reconnects.
  client.on('error', () => {});
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => {});
    throw connectError(store, err);
  }
  return client;
}

export function connectError(store: StoreUrl, err: unknown): DispatcherError {
  const e = err as { code?: string; message?: string };
  const why: Record<string, string> = {
    ECONNREFUSED: 'nothing listens there',
    ENOTFOUND: 'the host name does not resolve',
    EHOSTUNREACH: 'the host is unreachable',
    ETIMEDOUT: 'the connection timed out',
    '28P01': 'the password was refused',
    '28000': 'the server refused this user or address (pg_hba.conf)',
    '3D000': 'the database does not exist',
  };
  const reason = (e.code && why[e.code]) ?? e.message ?? String(err);
  return new DispatcherError('DSP_ERR_STORE_CONNECT', `cannot use the database ${store.display}: ${reason}`, {
    hint: 'check --store (host, port, user, password, database) and that PostgreSQL runs and accepts this machine',
    cause: err,
  });
}
