/**
 * Reboot by kexec (node-agent/src/kexec.ts, power.ts, the agent's reboot command): the files
 * come from a real HTTP server on 127.0.0.1 and are checked for real.
 *
 * The one stand-in: the kexec program. A real `kexec -l`/`-e` would replace this host's
 * kernel, so a shell script in a temp dir plays it, recording each argv in a log.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createServer, type Server } from 'node:http';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { FileRef, KexecPlan } from '../../../dispatcher/src/protocol/messages.js';
import { Agent, POWER_DELAY_MS } from '../../../node-agent/src/agent.js';
import { INITRD_NAME, KERNEL_NAME, KexecError, execLoaded, fetchPlan, loadPlan, type KexecOptions } from '../../../node-agent/src/kexec.js';
import { SystemPower } from '../../../node-agent/src/power.js';
import { FakeInventory, FakePower, FakeReporter, FakeRunner, FakeSource } from './fakes.js';
import { tempDir } from './temp-dirs.js';

const bytes = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff));
const KERNEL = bytes(4096 + 123, 1);
const ROOT_CPIO = bytes(8192, 2); // a multiple of 4, as root.cpio always is
const BASE = bytes(3000 + 1, 3);
const ODD = bytes(5, 4);

/** path → what the server answers. */
type Route = { body: Buffer; status?: number; chunked?: boolean; stall?: boolean };
const routes = new Map<string, Route>([
  ['/vmlinuz', { body: KERNEL }],
  ['/root.cpio', { body: ROOT_CPIO }],
  ['/initrd.img', { body: BASE }],
  ['/odd', { body: ODD }],
  ['/missing', { body: Buffer.from('not found'), status: 404 }],
  ['/chunked-kernel', { body: KERNEL, chunked: true }],
  ['/stall', { body: KERNEL, stall: true }],
]);

let server: Server;
let base: string;
const dir = tempDir('lc-kexec-');
const work = join(dir, 'run');
const log = join(dir, 'kexec.log');
/** The stand-in kexec: records argv (tab-separated) and exits 0; `fail` says it cannot load, like kexec on a refusing kernel. */
const fakeKexec = join(dir, 'kexec');
const failingKexec = join(dir, 'kexec-fail');

beforeAll(async () => {
  writeFileSync(fakeKexec, `#!/bin/sh\nfor a; do printf '%s\\t' "$a"; done >>'${log}'\necho >>'${log}'\n`);
  writeFileSync(failingKexec, `#!/bin/sh\necho 'Cannot load ${dir}/vmlinuz: Operation not permitted' >&2\nexit 1\n`);
  chmodSync(fakeKexec, 0o755);
  chmodSync(failingKexec, 0o755);
  server = createServer((req, res) => {
    const r = routes.get(req.url ?? '');
    if (!r) return void res.writeHead(404).end();
    if (r.stall) {
      res.writeHead(200, { 'content-length': r.body.length });
      res.write(r.body.subarray(0, 10)); // then nothing: the agent's timeout must end it
      return;
    }
    if (r.chunked) {
      res.writeHead(200);
      res.write(r.body.subarray(0, 100));
      res.end(r.body.subarray(100));
      return;
    }
    res.writeHead(r.status ?? 200, { 'content-length': r.body.length }).end(r.body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => {
  server.closeAllConnections();
  server.close();
});

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const ref = (path: string, body: Buffer, over: Partial<FileRef> = {}): FileRef => ({
  url: `${base}${path}`,
  sha256: sha(body),
  size: body.length,
  ...over,
});
const plan = (over: Partial<KexecPlan> = {}): KexecPlan => ({
  kernel: ref('/vmlinuz', KERNEL),
  initrds: [ref('/root.cpio', ROOT_CPIO), ref('/initrd.img', BASE)],
  cmdline: 'console=ttyS0 lc.token=abc lc.image=ml@3 lc.via=kexec',
  ...over,
});
const opts = (over: Partial<KexecOptions> = {}): KexecOptions => ({
  dir: work,
  program: fakeKexec,
  fetchTimeoutMs: 5000,
  userAgent: 'lilcluster-node-agent/test',
  ...over,
});
const calls = (): string[][] =>
  existsSync(log)
    ? readFileSync(log, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => l.replace(/\t$/, '').split('\t'))
    : [];
const clearLog = () => writeFileSync(log, '');

describe('kexec plans', () => {
  it('fetches, checks and loads: kexec -c -i -l with the kernel, the initrds concatenated in order, and the command line', async () => {
    clearLog();
    const p = plan();
    const files = await loadPlan(p, opts());
    expect(files).toEqual({
      kernel: join(work, KERNEL_NAME),
      initrd: join(work, INITRD_NAME),
      initrdBytes: ROOT_CPIO.length + BASE.length,
    });
    expect(readFileSync(files.kernel)).toEqual(KERNEL);
    expect(readFileSync(files.initrd)).toEqual(Buffer.concat([ROOT_CPIO, BASE]));
    expect(calls()).toEqual([['-c', '-i', '-l', files.kernel, `--initrd=${files.initrd}`, `--command-line=${p.cmdline}`]]);
  });

  it('loads with kexec_file_load (-s) when kexec_load is refused, as under Secure Boot lockdown', async () => {
    clearLog();
    const lockdown = join(dir, 'kexec-lockdown');
    writeFileSync(
      lockdown,
      `#!/bin/sh\nfor a; do printf '%s\\t' "$a"; done >>'${log}'\necho >>'${log}'\n[ "$1" = -c ] && { echo 'kexec_load failed: Operation not permitted' >&2; exit 1; }\nexit 0\n`,
    );
    chmodSync(lockdown, 0o755);
    const p = plan();
    const files = await loadPlan(p, opts({ program: lockdown }));
    const rest = ['-l', files.kernel, `--initrd=${files.initrd}`, `--command-line=${p.cmdline}`];
    expect(calls()).toEqual([
      ['-c', '-i', ...rest],
      ['-s', ...rest],
    ]);
  });

  it('pads an initrd whose length is not a multiple of 4, so the next archive starts aligned', async () => {
    const files = await fetchPlan(plan({ initrds: [ref('/odd', ODD), ref('/root.cpio', ROOT_CPIO)] }), opts());
    expect(readFileSync(files.initrd)).toEqual(Buffer.concat([ODD, Buffer.alloc(3), ROOT_CPIO]));
  });

  it('takes a body sent without a length (chunked) when it matches', async () => {
    const files = await fetchPlan(plan({ kernel: ref('/chunked-kernel', KERNEL) }), opts());
    expect(readFileSync(files.kernel)).toEqual(KERNEL);
  });

  const refused = async (p: KexecPlan, o: KexecOptions, message: RegExp) => {
    clearLog();
    const err = await loadPlan(p, o).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KexecError);
    expect((err as Error).message).toMatch(message);
    expect(calls()).toEqual([]); // kexec never saw the files
    expect(existsSync(work)).toBe(false); // nothing half-fetched is left in RAM
  };

  it('refuses a file whose sha256 is not the announced one, naming the file and both digests', async () => {
    const wrong = 'f'.repeat(64);
    await refused(
      plan({ initrds: [ref('/root.cpio', ROOT_CPIO), ref('/initrd.img', BASE, { sha256: wrong })] }),
      opts(),
      new RegExp(`^initrd 2 of 2 \\(${base}/initrd\\.img\\): sha256 ${sha(BASE).slice(0, 12)}… is not the announced ffffffffffff…$`),
    );
  });

  it('refuses a body longer than announced, by its Content-Length or as it streams', async () => {
    await refused(
      plan({ kernel: ref('/vmlinuz', KERNEL, { size: KERNEL.length - 1 }) }),
      opts(),
      new RegExp(`^the kernel \\(${base}/vmlinuz\\): the server sends ${KERNEL.length} bytes, the plan announced ${KERNEL.length - 1}$`),
    );
    await refused(
      plan({ kernel: ref('/chunked-kernel', KERNEL, { size: 1000 }) }),
      opts(),
      /^the kernel \(.*\/chunked-kernel\): more than the 1000 bytes the plan announced$/,
    );
  });

  it('refuses a body shorter than announced', async () => {
    await refused(
      plan({ kernel: ref('/vmlinuz', KERNEL, { size: KERNEL.length + 10 }) }),
      opts(),
      new RegExp(`: ${KERNEL.length} bytes, the plan announced ${KERNEL.length + 10}$`),
    );
  });

  it('refuses an HTTP error, naming the status', async () => {
    await refused(plan({ kernel: ref('/missing', KERNEL) }), opts(), /^the kernel \(.*\/missing\): HTTP 404 Not Found$/);
  });

  it('refuses a server that stops sending, after the timeout', async () => {
    await refused(
      plan({ kernel: ref('/stall', KERNEL) }),
      opts({ fetchTimeoutMs: 300 }),
      /^the kernel \(.*\/stall\): not received within 0.3 s$/,
    );
  });

  it('refuses a server that does not answer at all', async () => {
    const gone = createServer();
    await new Promise<void>((resolve) => gone.listen(0, '127.0.0.1', resolve));
    const port = (gone.address() as AddressInfo).port;
    await new Promise((resolve) => gone.close(resolve));
    await refused(plan({ kernel: { ...ref('/vmlinuz', KERNEL), url: `http://127.0.0.1:${port}/vmlinuz` } }), opts(), /: ECONNREFUSED$/);
  });

  it('reports what kexec said when it cannot load, or that it is not installed', async () => {
    await expect(loadPlan(plan(), opts({ program: failingKexec }))).rejects.toThrow(
      /^kexec could not load .*vmlinuz: kexec -c: .*kexec-fail -l exited with status 1: Cannot load .*; kexec -s: .*Operation not permitted$/,
    );
    await expect(loadPlan(plan(), opts({ program: join(dir, 'nope') }))).rejects.toThrow(
      /nope is not installed \(the image lacks kexec-tools\)/,
    );
  });

  it('kexec -e that comes back is a failure with its reason', async () => {
    expect(await execLoaded({ program: failingKexec })).toMatch(/^kexec -e returned: .*kexec-fail -e exited with status 1: Cannot load/);
  });
});

describe('SystemPower kexec', () => {
  it('refuses on a host with a disk root unless --allow-power, before fetching anything', async () => {
    clearLog();
    const power = new SystemPower({ ramRoot: false, allowPower: false, kexec: opts() });
    await expect(power.loadKexec(plan())).rejects.toThrow(/--allow-power/);
    await expect(power.execKexec()).rejects.toThrow(/--allow-power/);
    expect(calls()).toEqual([]);
  });

  it('loads, and when kexec -e returns, unloads and says so', async () => {
    clearLog();
    const power = new SystemPower({ ramRoot: true, allowPower: false, kexec: opts() });
    await power.loadKexec(plan());
    await expect(power.execKexec()).rejects.toThrow(/^kexec -e returned: exit status 0, yet this kernel still runs$/);
    expect(calls().map((c) => c.find((a) => ['-l', '-e', '-u'].includes(a)))).toEqual(['-l', '-e', '-u']);
  });
});

describe('the agent reboots by kexec', () => {
  /** FakePower for the firmware side; its loadKexec runs the real fetch-check-load with the stand-in kexec. */
  function make(program = fakeKexec) {
    const source = new FakeSource();
    const power = new FakePower();
    power.load = async (p) => void (await loadPlan(p, opts({ program })));
    const lines: string[] = [];
    const agent = new Agent(
      { source, runner: new FakeRunner(), reporter: new FakeReporter(), inventory: new FakeInventory(), power },
      { slots: 1, prefetch: 0, execTimeoutMs: 1000, say: (l) => lines.push(l) },
    );
    agent.start();
    source.connect();
    return { agent, source, power, lines };
  }
  const reboot = (id: number, p: KexecPlan | undefined, firmware?: boolean) =>
    ({ type: 'control', id, command: { kind: 'reboot', ...(p ? { kexec: p } : {}), ...(firmware ? { firmware } : {}) } }) as const;

  it('acknowledges, loads, reports path kexec, then jumps; a kexec -e that returns ends in a firmware reboot', async () => {
    const { agent, source, power, lines } = make();
    source.deliver(reboot(7, plan()));
    expect(source.of('control-ack')).toEqual([{ type: 'control-ack', id: 7, ok: true }]);
    await vi.waitFor(() =>
      expect(source.of('control-done')).toEqual([{ type: 'control-done', id: 7, ok: true, result: { path: 'kexec' } }]),
    );
    await vi.waitFor(() => expect(power.calls).toEqual(['loadKexec', 'execKexec', 'reboot']), { timeout: 2 * POWER_DELAY_MS + 2000 });
    expect(lines.join('\n')).toMatch(/rebooting by the firmware: kexec failed: kexec -e returned: exit status 1/);
    await agent.stop();
  });

  it('reports path firmware with the reason when a file is refused, then reboots by the firmware', async () => {
    const { agent, source, power } = make();
    source.deliver(reboot(8, plan({ kernel: ref('/vmlinuz', KERNEL, { sha256: '0'.repeat(64) }) })));
    await vi.waitFor(() => expect(source.of('control-done')).toHaveLength(1));
    expect(source.of('control-done')[0]).toEqual({
      type: 'control-done',
      id: 8,
      ok: true,
      result: {
        path: 'firmware',
        reason: expect.stringMatching(/^the kernel \(.*\/vmlinuz\): sha256 [0-9a-f]{12}… is not the announced 000000000000…$/),
      },
    });
    await vi.waitFor(() => expect(power.calls).toEqual(['loadKexec', 'reboot']), { timeout: POWER_DELAY_MS + 2000 });
    await agent.stop();
  });

  it('falls back to the firmware when kexec cannot load the kernel', async () => {
    const { agent, source, power } = make(failingKexec);
    source.deliver(reboot(9, plan()));
    await vi.waitFor(() => expect(source.of('control-done')).toHaveLength(1));
    expect(source.of('control-done')[0]!.result).toEqual({ path: 'firmware', reason: expect.stringMatching(/Operation not permitted/) });
    await vi.waitFor(() => expect(power.calls).toEqual(['loadKexec', 'reboot']), { timeout: POWER_DELAY_MS + 2000 });
    await agent.stop();
  });

  it('with firmware: true, reboots the old way and sends no control-done', async () => {
    const { agent, source, power } = make();
    source.deliver(reboot(10, plan(), true));
    expect(source.of('control-ack')).toEqual([{ type: 'control-ack', id: 10, ok: true }]);
    await vi.waitFor(() => expect(power.calls).toEqual(['reboot']), { timeout: POWER_DELAY_MS + 2000 });
    expect(source.of('control-done')).toEqual([]);
    await agent.stop();
  });

  it('refuses a kexec reboot where power commands are refused, and a second reboot while one is under way', async () => {
    const refusing = make();
    refusing.power.refusalText = 'needs --allow-power';
    refusing.source.deliver(reboot(11, plan()));
    expect(refusing.source.of('control-ack')).toEqual([{ type: 'control-ack', id: 11, ok: false, error: 'needs --allow-power' }]);
    expect(refusing.power.calls).toEqual([]);
    await refusing.agent.stop();

    const { agent, source, power } = make();
    let release!: () => void;
    power.load = () => new Promise<void>((r) => (release = r));
    source.deliver(reboot(12, plan()));
    source.deliver(reboot(13, plan()));
    expect(source.of('control-ack')).toEqual([
      { type: 'control-ack', id: 12, ok: true },
      { type: 'control-ack', id: 13, ok: false, error: 'a reboot is already under way' },
    ]);
    release();
    await vi.waitFor(() => expect(source.of('control-done')).toHaveLength(1));
    await agent.stop();
  });
});
