/**
 * The real dispatcher (dist/bin/dispatcher.mjs, `make build`) as a child process: the one
 * harness of the integration tests that start it, whatever the area.
 *
 *   const d = await startDispatcher();                                  // loopback, no DHCP, no TFTP
 *   const d = await startDispatcher({ tftp: true, boot: makeBootTree() }); // TFTP on a port the kernel picks
 *   const d = await startDispatcher({ ns: srv, args: ['--interface', br.name, '--dhcp', 'full'] });
 *   await d.api('POST', '/api/v1/jobs', {...}); d.logs.find(...); d.query('SELECT ...'); await d.stop();
 *
 * Flags, before `args` (commander keeps an option's last value, so `args` can override them):
 * `--data-dir`, `--http-port 0` (or `port`), `--heartbeat 1`, `--log-level info`, `--image` and
 * `--pxe-dir` (`boot`, else a stand-in image: a few bytes of kernel and initrd, so machines are
 * given boot scripts; no test depends on what `make image` left in dist/), `--images` (an empty dir),
 * `--no-tftp` or `--tftp-port 0`, `--cluster` (`cluster`); with `loopback` (the default outside a namespace) also
 * `--dhcp off --http-host 127.0.0.1 --advertise-address 127.0.0.1`.
 *
 * Started means its "dispatcher started" log line (every service is up then: HTTP, TFTP,
 * DHCP) and, with DHCP, its sockets past the settling time in which they drop packets.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import Database from 'better-sqlite3';
import { BIND_SETTLE_MS } from '../../dispatcher/src/dhcp/server.js';
import { tempDir } from '../unit/agent/temp-dirs.js';
import type { Netns } from './netns.js';
import { DISPATCHER_BIN, ROOT } from './paths.js';

/**
 * An image folder with a few bytes of kernel and initrd and no manifest (versioned by its
 * bytes): enough for the dispatcher to give machines boot scripts, which simulated machines
 * (simulated-machine.ts) read their boot tokens from.
 */
export function standInImage(): string {
  const dir = tempDir('lc-disp-image-');
  writeFileSync(join(dir, 'vmlinuz'), 'stand-in kernel\n');
  writeFileSync(join(dir, 'initrd.img'), 'stand-in initrd\n');
  return dir;
}

/** SIGTERM (or the signal given to stop), then SIGKILL after this long. */
const STOP_GRACE_MS = 5_000;

export interface DispatcherOptions {
  /** Run it in this network namespace: a lab's (the lab also stops it at cleanup) or one named. */
  ns?: Netns | string;
  /** Loopback only, no DHCP (default: true outside a namespace, false inside). */
  loopback?: boolean;
  /** Flags after the harness's (they win). */
  args?: string[];
  /** Default: a new temp dir, removed after the test file. */
  dataDir?: string;
  /** HTTP port; default 0 (the kernel picks one, read back from the log). */
  port?: number;
  heartbeatSeconds?: number;
  /** TFTP on a port the kernel picks (`tftpPort`); default off. */
  tftp?: boolean;
  /** A cluster definition (YAML text), written into the data dir and passed as --cluster. */
  cluster?: string;
  /** Boot files (--image, --pxe-dir); default a stand-in image (standInImage) and no first stages. */
  boot?: { imageDir: string; pxeDir: string };
  /** info or finer: the harness reads the log. */
  logLevel?: 'info' | 'debug' | 'trace';
  /** Added to this process's environment. */
  env?: NodeJS.ProcessEnv;
  /** Runs the dispatcher through this command, e.g. `['/bin/sh', '-c', 'umask 000; exec "$@"', 'sh']`. */
  prefix?: string[];
  /** Output (stdout or stderr) to wait for too before it counts as started. */
  waitFor?: RegExp;
  /** How long start may take (default 30 s). */
  timeoutMs?: number;
}

/** A dispatcher process: `spawnDispatcher` gives it at once, `startDispatcher` once it serves. */
export class DispatcherProcess {
  readonly child: ChildProcess;
  readonly dataDir: string;
  /** Settles when the process has exited and its output is all read. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Its JSON log lines so far (stdout); grows while it runs. */
  readonly logs: Record<string, unknown>[] = [];
  /** HTTP port and base URL (as reached from where it runs), once started. */
  port = 0;
  url = '';
  /** 0 without TFTP. */
  tftpPort = 0;
  #out = '';
  #err = '';
  #db: Database.Database | undefined;
  #token: string | undefined;
  readonly #waiters = new Set<() => void>();
  readonly #opts: DispatcherOptions;

  constructor(opts: DispatcherOptions = {}) {
    if (!existsSync(DISPATCHER_BIN)) throw new Error(`${DISPATCHER_BIN} missing: run make build`);
    this.#opts = opts;
    this.dataDir = opts.dataDir ?? tempDir('lc-disp-');
    const loopback = opts.loopback ?? opts.ns === undefined;
    const boot = opts.boot ?? { imageDir: standInImage(), pxeDir: tempDir('lc-disp-pxe-') };
    const args = [
      '--data-dir',
      this.dataDir,
      '--http-port',
      String(opts.port ?? 0),
      '--heartbeat',
      String(opts.heartbeatSeconds ?? 1),
      '--log-level',
      opts.logLevel ?? 'info',
      '--image',
      boot.imageDir,
      '--pxe-dir',
      boot.pxeDir,
      '--images',
      tempDir('lc-disp-images-'),
      ...(opts.tftp ? ['--tftp-port', '0'] : ['--no-tftp']),
      ...(loopback ? ['--dhcp', 'off', '--http-host', '127.0.0.1', '--advertise-address', '127.0.0.1'] : []),
      ...(opts.cluster !== undefined ? ['--cluster', join(this.dataDir, 'cluster.yaml')] : []),
      ...(opts.args ?? []),
    ];
    if (opts.cluster !== undefined) writeFileSync(join(this.dataDir, 'cluster.yaml'), opts.cluster);
    const [cmd, ...rest] = [...(opts.prefix ?? []), process.execPath, DISPATCHER_BIN, ...args] as [string, ...string[]];
    const env = { ...process.env, ...opts.env };
    if (typeof opts.ns === 'object') this.child = opts.ns.spawn(cmd, rest, { env, cwd: ROOT }).child;
    else if (typeof opts.ns === 'string')
      this.child = spawn('ip', ['netns', 'exec', opts.ns, cmd, ...rest], { env, cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    else this.child = spawn(cmd, rest, { env, cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });

    const stdout = new StringDecoder('utf8');
    const stderr = new StringDecoder('utf8');
    let partial = '';
    this.child.stdout!.on('data', (b: Buffer) => {
      const s = stdout.write(b);
      this.#out += s;
      const parts = (partial + s).split('\n');
      partial = parts.pop()!;
      for (const line of parts) {
        if (!line.startsWith('{')) continue;
        try {
          this.logs.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          /* not a log line: still in output() */
        }
      }
      this.#wake();
    });
    this.child.stderr!.on('data', (b: Buffer) => {
      const s = stderr.write(b);
      this.#out += s;
      this.#err += s;
      this.#wake();
    });
    this.exited = new Promise((r) => this.child.once('close', (code, signal) => r({ code, signal })));
    void this.exited.then(() => this.#wake());
  }

  /** stdout and stderr so far, interleaved. */
  output(): string {
    return this.#out;
  }

  stderr(): string {
    return this.#err;
  }

  /** Resolves with the first log line `match` accepts (past or future); rejects on exit or timeout. */
  waitForLog(match: (l: Record<string, unknown>) => boolean, timeoutMs = 20_000): Promise<Record<string, unknown>> {
    return this.#until(`a log line like ${match}`, () => this.logs.find(match), timeoutMs);
  }

  /** Resolves with the first match of `re` in the output (past or future); rejects on exit or timeout. */
  waitForOutput(re: RegExp, timeoutMs = 20_000): Promise<RegExpMatchArray> {
    return this.#until(String(re), () => this.#out.match(re) ?? undefined, timeoutMs);
  }

  /** Waits until it serves (see the header); rejects with its output if it exits first. */
  async started(): Promise<this> {
    const timeoutMs = this.#opts.timeoutMs ?? 30_000;
    const up = await this.waitForLog((l) => l.msg === 'dispatcher started', timeoutMs);
    if (this.#opts.waitFor) await this.waitForOutput(this.#opts.waitFor, timeoutMs);
    this.port = up.httpPort as number;
    this.url = `http://${String(up.address)}:${this.port}`;
    this.tftpPort = Number(this.logs.find((l) => l.msg === 'TFTP listening')?.port ?? 0);
    const dhcp = this.logs.find((l) => l.msg === 'DHCP serving' || String(l.msg).startsWith('ProxyDHCP serving'));
    const armedAt = dhcp ? Date.parse(String(dhcp.time)) + BIND_SETTLE_MS : NaN;
    if (armedAt > Date.now()) await new Promise((r) => setTimeout(r, armedAt - Date.now()));
    return this;
  }

  /** The admin token (from the data dir). */
  get token(): string {
    this.#token ??= readFileSync(join(this.dataDir, 'admin.token'), 'utf8').trim();
    return this.#token;
  }

  /** The key agents verify its handshake with. */
  get pubKeyFile(): string {
    return join(this.dataDir, 'identity.pub');
  }

  /** Calls the JSON API with the admin token; throws on an error status. */
  async api<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await fetch(`${this.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${this.token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const json = (await res.json()) as T;
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
    return json;
  }

  /** Raw text of a GET with the admin token (CSV, JSON lines). */
  async text(path: string): Promise<string> {
    const res = await fetch(`${this.url}${path}`, { headers: { authorization: `Bearer ${this.token}` } });
    if (!res.ok) throw new Error(`GET ${path}: ${res.status}`);
    return res.text();
  }

  /** Reads its SQLite store while it runs (read-only; WAL lets us read while it writes). */
  query<T>(sql: string, ...params: unknown[]): T[] {
    this.#db ??= new Database(join(this.dataDir, 'dispatcher.db'), { readonly: true, fileMustExist: true });
    return this.#db.prepare(sql).all(...params) as T[];
  }

  /** `signal` (SIGTERM), then SIGKILL after a grace period; resolves once it is gone. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    this.#db?.close();
    this.#db = undefined;
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill(signal);
      const t = setTimeout(() => this.child.kill('SIGKILL'), STOP_GRACE_MS);
      await this.exited;
      clearTimeout(t);
    }
  }

  #wake(): void {
    for (const w of this.#waiters) w();
  }

  #until<T>(what: string, probe: () => T | undefined, timeoutMs: number): Promise<T> {
    return new Promise((resolve, reject) => {
      const gone = () => this.child.exitCode !== null || this.child.signalCode !== null;
      const check = () => {
        const v = probe();
        if (v !== undefined) return finish(() => resolve(v));
        if (gone())
          return finish(() =>
            reject(
              new Error(
                `the dispatcher exited (${this.child.exitCode ?? this.child.signalCode}) before ${what}; output:\n${this.#out.slice(-4000)}`,
              ),
            ),
          );
      };
      const timer = setTimeout(
        () => finish(() => reject(new Error(`the dispatcher: no ${what} within ${timeoutMs} ms; output:\n${this.#out.slice(-4000)}`))),
        timeoutMs,
      );
      const finish = (f: () => void) => {
        clearTimeout(timer);
        this.#waiters.delete(check);
        f();
      };
      this.#waiters.add(check);
      check();
    });
  }
}

/** Starts a dispatcher without waiting for it (for one that must refuse to start). */
export function spawnDispatcher(opts: DispatcherOptions = {}): DispatcherProcess {
  return new DispatcherProcess(opts);
}

/** Starts a dispatcher and resolves once it serves; stops it and rejects if it does not. */
export async function startDispatcher(opts: DispatcherOptions = {}): Promise<DispatcherProcess> {
  const d = spawnDispatcher(opts);
  try {
    return await d.started();
  } catch (err) {
    await d.stop('SIGKILL');
    throw err;
  }
}

/** What the jobs API says about a job. */
export interface JobView {
  id: number;
  firstTaskId: number;
  state: string;
  counts: { total: number; queued: number; running: number; done: number; failed: number; cancelled: number };
}

/** One line of a job's results export (jsonl). */
export interface ResultLine {
  taskId: number;
  index: number;
  params: Record<string, unknown> | null;
  state: string;
  result: {
    attempt: number;
    node: string | null;
    mac: string | null;
    exitCode: number | null;
    signal: string | null;
    timedOut: boolean;
    error: string | null;
    durationMs: number;
    stdout: string;
    stderr: string;
  } | null;
}

export async function resultsOf(d: DispatcherProcess, job: number): Promise<ResultLine[]> {
  const text = await d.text(`/api/v1/jobs/${job}/results?format=jsonl`);
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as ResultLine);
}
