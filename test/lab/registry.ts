/**
 * A container registry on loopback for the tests: Debian's `docker-registry` (distribution
 * 2.8) on 127.0.0.1:<free port>, plain HTTP, its config and storage in a temp dir that stop()
 * removes. Optionally with htpasswd (basic) auth, to test a registry that wants credentials.
 *
 *   const reg = await startRegistry();                      // reg.host = '127.0.0.1:40123'
 *   await pushOci(reg, '/tmp/layout:v1', 'ml:1');           // skopeo copy oci:... docker://127.0.0.1:40123/ml:1
 *   const locked = await startRegistry({ auth: true });      // locked.user / locked.password / locked.authFile
 *   await reg.stop();
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from './netns.js';
import { freePort } from './ports.js';

export const REGISTRY_BIN = '/usr/bin/docker-registry';

/** The test account; its bcrypt hash (cost 4: htpasswd auth accepts any cost) is fixed so that no hashing tool is needed. */
const USER = 'lilcluster';
const PASSWORD = 'lilcluster-test-pw';
const PASSWORD_BCRYPT = '$2b$04$Dy3UnzWGW6.hm5fw/YqjXuOy.FRhJ.wilKExINihFgRY.mQn0qKBW';

export interface Registry {
  /** host:port as a docker:// reference names it. */
  host: string;
  dir: string;
  /** With auth: the account, and an auth.json (containers-auth.json(5)) that holds it, for REGISTRY_AUTH_FILE. */
  user: string | undefined;
  password: string | undefined;
  authFile: string | undefined;
  /** What the registry printed (its log), for a failing test's message. */
  log(): string;
  stop(): Promise<void>;
}

async function waitReady(url: string, child: ChildProcess, log: () => string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited with ${child.exitCode}:\n${log()}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (res.status === 200 || res.status === 401) return;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) throw new Error(`docker-registry did not answer ${url} within ${timeoutMs} ms:\n${log()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function startRegistry(opts: { auth?: boolean } = {}): Promise<Registry> {
  const dir = mkdtempSync(join(tmpdir(), 'lc-registry-'));
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  const auth = opts.auth ? ['auth:', '  htpasswd:', '    realm: lilcluster-test', `    path: ${join(dir, 'htpasswd')}`] : [];
  if (opts.auth) writeFileSync(join(dir, 'htpasswd'), `${USER}:${PASSWORD_BCRYPT}\n`);
  writeFileSync(
    join(dir, 'config.yml'),
    [
      'version: 0.1',
      'log:',
      '  level: warn',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${join(dir, 'storage')}`,
      '  delete:',
      '    enabled: true',
      'http:',
      `  addr: ${host}`,
      ...auth,
      '',
    ].join('\n'),
  );
  let authFile: string | undefined;
  if (opts.auth) {
    authFile = join(dir, 'auth.json');
    const token = Buffer.from(`${USER}:${PASSWORD}`).toString('base64');
    writeFileSync(authFile, JSON.stringify({ auths: { [host]: { auth: token } } }), { mode: 0o600 });
  }
  const out: string[] = [];
  const child = spawn(REGISTRY_BIN, ['serve', join(dir, 'config.yml')], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.on('data', (c: Buffer) => out.push(c.toString()));
  child.stderr!.on('data', (c: Buffer) => out.push(c.toString()));
  const log = () => out.join('').slice(-4000);
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitReady(`http://${host}/v2/`, child, log, 15_000);
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    host,
    dir,
    user: opts.auth ? USER : undefined,
    password: opts.auth ? PASSWORD : undefined,
    authFile,
    log,
    stop,
  };
}

/** Pushes an image (any skopeo source reference) to `registry` as `name:tag`, with the registry's account when it has one. */
export async function pushImage(registry: Registry, source: string, nameTag: string): Promise<void> {
  const creds = registry.user ? ['--dest-creds', `${registry.user}:${registry.password}`] : [];
  await run('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', ...creds, source, `docker://${registry.host}/${nameTag}`], {
    timeoutMs: 120_000,
  });
}
