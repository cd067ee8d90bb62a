/**
 * A throwaway PostgreSQL for tests and benchmarks: Debian's `postgresql` server binaries,
 * a cluster made by initdb in a temp dir (as user postgres: its tools refuse root), listening
 * on a private port, with default durability (fsync and synchronous_commit on). The password
 * is random; `url` carries it.
 *
 *   const pg = await startPostgres();                        // 127.0.0.1, a free port
 *   afterAll(() => pg.destroy());
 *   spawn dispatcher --store pg.url ...
 *   await pg.stop(); await pg.start();                       // the database goes away and returns
 *
 * In a lab namespace, pass `netns` (its name) and the addresses to listen on.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { freePort } from './ports.js';

export interface PostgresOptions {
  /** Default: a free port on 127.0.0.1. */
  port?: number;
  /** Addresses to listen on (default 127.0.0.1). */
  listen?: string;
  /** Run the server inside this network namespace (`ip netns exec`). */
  netns?: string;
  database?: string;
}

export interface Postgres {
  /** postgres://postgres:PASSWORD@HOST:PORT/DATABASE, HOST the first listen address. */
  url: string;
  port: number;
  dir: string;
  /** Starts the server (again); resolves when it accepts connections. */
  start(): Promise<void>;
  /** Fast shutdown: sessions end, the server exits cleanly. */
  stop(): Promise<void>;
  /** SIGKILL of the postmaster, as a crashed database machine. */
  kill(): Promise<void>;
  /** Runs SQL as the superuser over the unix socket (in `db`, default the test database); returns psql's unaligned output. */
  psql(sql: string, db?: string): string;
  /** Stops the server and deletes its files. */
  destroy(): Promise<void>;
  /** The server's log so far (for failure messages). */
  log(): string;
}

export function postgresBinDir(): string {
  const base = '/usr/lib/postgresql';
  const versions = existsSync(base) ? readdirSync(base).filter((v) => existsSync(join(base, v, 'bin', 'postgres'))) : [];
  versions.sort((a, b) => Number(a) - Number(b));
  const v = versions.at(-1);
  if (!v)
    throw new Error('PostgreSQL server binaries not found under /usr/lib/postgresql: apt-get install postgresql (test/lab/deps.sh does)');
  return join(base, v, 'bin');
}

export async function startPostgres(opts: PostgresOptions = {}): Promise<Postgres> {
  const bin = postgresBinDir();
  const port = opts.port ?? (await freePort());
  const listen = opts.listen ?? '127.0.0.1';
  const database = opts.database ?? 'lilcluster';
  const dir = mkdtempSync(join(tmpdir(), 'lc-pg-'));
  chownSync(dir, uid('postgres'), gid('postgres'));
  const password = randomBytes(18).toString('base64url');
  const pwFile = join(dir, 'pw');
  writeFileSync(pwFile, `${password}\n`, { mode: 0o600 });
  chownSync(pwFile, uid('postgres'), gid('postgres'));
  const asPostgres = (cmd: string, args: string[]) =>
    execFileSync('runuser', ['-u', 'postgres', '--', join(bin, cmd), ...args], {
      cwd: dir,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  asPostgres('initdb', [
    '-D',
    join(dir, 'data'),
    '-U',
    'postgres',
    '-E',
    'UTF8',
    '--locale=C',
    '--auth-local=peer',
    '--auth-host=scram-sha-256',
    `--pwfile=${pwFile}`,
  ]);
  rmSync(pwFile);
  // Hosts outside 127.0.0.1 (lab namespaces) authenticate by password too.
  writeFileSync(join(dir, 'data', 'pg_hba.conf'), 'local all all peer\nhost all all 0.0.0.0/0 scram-sha-256\n', { flag: 'a' });

  let server: ChildProcess | undefined;
  let output = '';
  const host = listen.split(',')[0]!.trim();

  const ready = () => {
    try {
      execFileSync(join(bin, 'pg_isready'), ['-q', '-h', dir, '-p', String(port)], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  };

  const start = async () => {
    const args = [
      '-u',
      'postgres',
      '--',
      join(bin, 'postgres'),
      '-D',
      join(dir, 'data'),
      '-p',
      String(port),
      '-c',
      `listen_addresses=${listen}`,
      '-c',
      `unix_socket_directories=${dir}`,
      '-c',
      'fsync=on',
      '-c',
      'synchronous_commit=on',
      '-c',
      'max_connections=200',
    ];
    const [cmd, argv] = opts.netns ? ['ip', ['netns', 'exec', opts.netns, 'runuser', ...args]] : ['runuser', args];
    const child = spawn(cmd, argv as string[], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    server = child;
    child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
    const deadline = Date.now() + 30_000;
    while (!ready()) {
      if (child.exitCode !== null) throw new Error(`postgres exited (${child.exitCode}):\n${output}`);
      if (Date.now() > deadline) throw new Error(`postgres not ready in 30 s:\n${output}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  const postmasterPid = (): number | undefined => {
    try {
      return Number(execFileSync('head', ['-1', join(dir, 'data', 'postmaster.pid')], { encoding: 'utf8' }).trim());
    } catch {
      return undefined;
    }
  };

  const waitExit = async (signal: NodeJS.Signals) => {
    const pid = postmasterPid();
    const child = server;
    server = undefined;
    if (pid) {
      try {
        process.kill(pid, signal);
      } catch {
        /* gone */
      }
    }
    if (child && child.exitCode === null && child.signalCode === null)
      await new Promise<void>((r) => {
        const t = setTimeout(() => {
          child.kill('SIGKILL');
          r();
        }, 20_000);
        child.once('exit', () => {
          clearTimeout(t);
          r();
        });
      });
    // After a SIGKILL the postmaster's children notice their parent is gone and exit; the
    // next start waits for the shared memory they hold (postgres says so in its log).
    if (signal === 'SIGKILL') {
      for (let i = 0; i < 100 && existsSync(join(dir, 'data', 'postmaster.pid')) && pgChildrenAlive(dir); i++)
        await new Promise((r) => setTimeout(r, 100));
    }
  };

  await start();
  execFileSync('runuser', ['-u', 'postgres', '--', join(bin, 'createdb'), '-h', dir, '-p', String(port), database], {
    cwd: dir,
    stdio: 'ignore',
  });

  return {
    url: `postgres://postgres:${password}@${host}:${port}/${database}`,
    port,
    dir,
    start,
    stop: () => waitExit('SIGINT'),
    kill: () => waitExit('SIGKILL'),
    psql: (sql, db = database) =>
      execFileSync('runuser', ['-u', 'postgres', '--', join(bin, 'psql'), '-h', dir, '-p', String(port), '-d', db, '-XAtq', '-c', sql], {
        cwd: dir,
        encoding: 'utf8',
      }),
    destroy: async () => {
      await waitExit('SIGINT');
      rmSync(dir, { recursive: true, force: true });
    },
    log: () => output,
  };
}

function pgChildrenAlive(dir: string): boolean {
  try {
    return execFileSync('pgrep', ['-f', `${dir}/data`], { encoding: 'utf8' }).trim() !== '';
  } catch {
    return false;
  }
}

function uid(user: string): number {
  return Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim());
}

function gid(user: string): number {
  return Number(execFileSync('id', ['-g', user], { encoding: 'utf8' }).trim());
}
