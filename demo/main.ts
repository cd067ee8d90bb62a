/**
 * `make demo`: a virtual diskless cluster on this machine, end to end.
 *
 *   node dist/demo/demo.mjs up      (demo/demo.sh runs it after the build)
 *   node dist/demo/demo.mjs stop    (`make demo-stop`)
 *
 * `up`: removes what an earlier run left, picks KVM or TCG, creates the private network
 * (network.ts), starts the dispatcher on it in full DHCP mode with a cluster file naming the
 * machines node1..nodeN by MAC, a localhost:8080 forwarder (forward.ts), and N diskless QEMU
 * machines (odd ones BIOS, even ones UEFI) that PXE-boot from it. Once every node's agent is
 * connected it submits the π job (job/pi.js, one task per seed) with `dispatcherctl submit
 * --wait`, reads the results back with `dispatcherctl results --format jsonl`, prints the
 * estimate and the tasks each node ran. Then it leaves the cluster running and prints the
 * dashboard's log-in link — or, with DEMO_EXIT=1 (CI), checks the result, tears everything
 * down and exits 0 only if the estimate is right, every task succeeded, every node worked and
 * nothing is left behind. Ctrl-C at any point tears everything down.
 *
 * Every process it starts outlives it (detached, pid file in the state dir, the state dir in
 * its command line): `stop` finds them by PID (processes.ts) and deletes the `lcdemo*`
 * interfaces.
 */
import { execFile, spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, relative, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { OVMF_VARS, qemuArgs } from '../test/lab/qemu.js';
import { chooseAccel } from './accel.js';
import { parseResults, problems, summarize } from './aggregate.js';
import { FORWARD_READY, forward } from './forward.js';
import { createBridge, createTaps, demoInterfaces, removeNetwork } from './network.js';
import { isOurs, ownProcesses, pidFile, readPid, spawnDetached, stopAll } from './processes.js';
import {
  BRIDGE,
  DHCP_RANGE,
  DISPATCHER_IP,
  DISPATCHER_PORT,
  PI_TOLERANCE,
  SettingsError,
  clusterFileText,
  demoSettings,
  type DemoNode,
  type DemoSettings,
} from './settings.js';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const API = `http://${DISPATCHER_IP}:${DISPATCHER_PORT}`;
/** What a boot takes under TCG on an idle 2-core machine (measured), said while waiting. */
const TYPICAL_BOOT_S = { bios: { tcg: 30, kvm: 10 }, uefi: { tcg: 60, kvm: 15 } } as const;
const WAIT_REPORT_EVERY_MS = 15_000;
const TASK_TIMEOUT_S = 300;
/** TCG translation cache per machine (MiB); QEMU's default is 1024. */
const TCG_TB_MIB = 256;

/** `make demo` started at DEMO_T0 (ms, set by demo.sh) so elapsed times include the build. */
const T0 = Number(process.env.DEMO_T0) || Date.now();

function elapsed(from = T0): string {
  const s = Math.round((Date.now() - from) / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

function say(msg: string): void {
  process.stdout.write(`[${elapsed()}] ${msg}\n`);
}

class DemoError extends Error {
  override name = 'DemoError';
}

/** Set by Ctrl-C: no step starts anything new once it is set. */
let stopping = false;

function checkNotStopping(): void {
  if (stopping) throw new DemoError('interrupted');
}

// ---------------------------------------------------------------------------------------
// Teardown

async function teardown(s: DemoSettings): Promise<string[]> {
  const stopped = await stopAll(s.stateDir);
  const removed = await removeNetwork();
  return [...stopped, ...removed.map((n) => `interface ${n}`)];
}

/** What is still there after a teardown (empty when clean). */
async function leftovers(s: DemoSettings): Promise<string[]> {
  return [
    ...ownProcesses(s.stateDir).map((p) => `process ${p.what} (pid ${p.pid})`),
    ...(await demoInterfaces()).map((n) => `interface ${n}`),
  ];
}

// ---------------------------------------------------------------------------------------
// Checks before anything starts

function checkBuilt(s: DemoSettings): void {
  const need = [
    'dist/bin/dispatcher.mjs',
    'dist/bin/dispatcherctl.mjs',
    'dist/image/vmlinuz',
    'dist/image/initrd.img',
    'pxe/bin/undionly.kpxe',
    'pxe/bin/ipxe.efi',
  ];
  const missing = need.filter((f) => !existsSync(join(s.repoRoot, f)));
  if (missing.length) throw new DemoError(`missing ${missing.join(', ')}: run make build pxe image (make demo does)`);
}

function portFree(host: string, port: number): Promise<boolean> {
  return new Promise((res) => {
    const srv = createServer();
    srv.once('error', () => res(false));
    srv.listen(port, host, () => srv.close(() => res(true)));
  });
}

async function checkAddressesFree(s: DemoSettings): Promise<void> {
  if (!(await portFree('127.0.0.1', s.localPort)))
    throw new DemoError(`port ${s.localPort} on localhost is taken by another program; run with DEMO_PORT=<another port>`);
  const addrs = await new Promise<string>((res) => execFile('ip', ['-o', '-4', 'addr', 'show'], (_e, out) => res(String(out))));
  const clash = addrs.split('\n').find((l) => l.includes(' 10.77.0.'));
  if (clash) throw new DemoError(`the demo's network 10.77.0.0/24 is already used on this host: ${clash.trim()}`);
}

// ---------------------------------------------------------------------------------------
// Starting the pieces

async function waitForLog(file: string, re: RegExp, pidName: string, s: DemoSettings, timeoutMs: number): Promise<RegExpMatchArray> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
    const m = re.exec(text);
    if (m) return m;
    const pid = readPid(pidFile(s.stateDir, pidName));
    if (pid === undefined || !isOurs(pid, s.stateDir))
      throw new DemoError(`${pidName} exited; its log (${file}) ends:\n${text.split('\n').slice(-20).join('\n')}`);
    if (Date.now() > deadline) throw new DemoError(`${pidName} did not print ${re} within ${timeoutMs / 1000} s; see ${file}`);
    checkNotStopping();
    await sleep(100);
  }
}

async function startDispatcher(s: DemoSettings): Promise<string> {
  const log = join(s.stateDir, 'dispatcher.log');
  rmSync(log, { force: true });
  const args = [
    join(s.repoRoot, 'dist/bin/dispatcher.mjs'),
    '--interface',
    BRIDGE,
    '--dhcp',
    'full',
    '--range',
    DHCP_RANGE,
    // Only on the bridge address: the page and API are not offered on the host's real interfaces.
    '--http-host',
    DISPATCHER_IP,
    '--http-port',
    String(DISPATCHER_PORT),
    '--data-dir',
    s.dataDir,
    '--image',
    join(s.repoRoot, 'dist/image'),
    '--pxe-dir',
    join(s.repoRoot, 'pxe/bin'),
    '--cluster',
    join(s.stateDir, 'cluster.yaml'),
  ];
  spawnDetached(s.stateDir, 'dispatcher', process.execPath, args, log);
  const m = await waitForLog(log, /Dashboard: (\S+)/, 'dispatcher', s, 60_000);
  return m[1]!;
}

async function startForwarder(s: DemoSettings): Promise<void> {
  const log = join(s.stateDir, 'forward.log');
  rmSync(log, { force: true });
  const self = fileURLToPath(import.meta.url);
  spawnDetached(
    s.stateDir,
    'forward',
    process.execPath,
    [self, 'forward', `127.0.0.1:${s.localPort}`, `${DISPATCHER_IP}:${DISPATCHER_PORT}`, '--state', s.stateDir],
    log,
  );
  await waitForLog(log, new RegExp(FORWARD_READY), 'forward', s, 15_000);
}

interface Booting {
  node: DemoNode;
  startedAt: number;
  upAfterS?: number;
  consoleLog: string;
}

async function startMachine(s: DemoSettings, node: DemoNode, accel: 'kvm' | 'tcg'): Promise<Booting> {
  checkNotStopping();
  const consoleLog = join(s.stateDir, `${node.name}.console.log`);
  let vars: string | undefined;
  if (node.firmware === 'uefi') {
    vars = join(s.stateDir, `${node.name}.OVMF_VARS.fd`);
    copyFileSync(OVMF_VARS, vars);
  }
  const args = qemuArgs(
    {
      name: node.name,
      firmware: node.firmware,
      boot: { kind: 'pxe' },
      nics: [{ net: { kind: 'tap', ifname: node.tap }, mac: node.mac }],
      memoryMiB: s.memoryMiB,
      cpus: s.cpus,
      consoleLog,
      pidFile: pidFile(s.stateDir, node.name),
      accel,
      ...(accel === 'kvm' ? { cpu: 'host' } : {}),
    },
    vars,
  )
    // `dispatcherctl reboot node3` must reboot the machine, not end QEMU.
    .filter((a) => a !== '-no-reboot')
    // TCG's translation cache defaults to 1 GiB per machine, and the guest's Node JIT fills it:
    // `-accel tcg,tb-size=` bounds it (and cannot be combined with `-machine ...,accel=`).
    .map((a) => (accel === 'tcg' && a === 'pc,accel=tcg' ? 'pc' : a));
  if (accel === 'tcg') args.push('-accel', `tcg,tb-size=${TCG_TB_MIB}`);
  rmSync(consoleLog, { force: true });
  const startedAt = Date.now();
  // -daemonize: QEMU detaches into a session of its own once the machine exists; its parent's
  // exit status tells whether it started. QEMU writes the pid file itself.
  await new Promise<void>((res, rej) =>
    execFile('qemu-system-x86_64', [...args, '-daemonize'], { timeout: 60_000 }, (err, _out, stderr) =>
      err ? rej(new DemoError(`${node.name}: QEMU did not start: ${String(stderr).trim() || err.message}`)) : res(),
    ),
  );
  return { node, startedAt, consoleLog };
}

interface NodeApiView {
  name: string;
  mac: string;
  state: string;
  connected: boolean;
  ip: string | null;
  bootStage: { stage: string; ts: number } | null;
}

async function apiNodes(): Promise<NodeApiView[]> {
  const res = await fetch(`${API}/api/v1/nodes`, { signal: AbortSignal.timeout(10_000) });
  if (!res.ok) throw new Error(`GET /api/v1/nodes: ${res.status}`);
  const body = (await res.json()) as { nodes: NodeApiView[] } | NodeApiView[];
  return Array.isArray(body) ? body : body.nodes;
}

const firmwareLabel = (n: DemoNode) => (n.firmware === 'bios' ? 'BIOS' : 'UEFI');

/** Waits until every machine's agent is connected, saying how each boot goes. */
async function waitForNodes(s: DemoSettings, machines: Booting[], accel: 'kvm' | 'tcg'): Promise<void> {
  const deadline = Date.now() + s.bootTimeoutS * 1000;
  let lastReport = Date.now();
  for (;;) {
    checkNotStopping();
    let views: NodeApiView[] = [];
    try {
      views = await apiNodes();
    } catch {
      /* the dispatcher is busy serving boots: ask again */
    }
    for (const m of machines) {
      if (m.upAfterS !== undefined) continue;
      const v = views.find((x) => x.mac === m.node.mac);
      if (v?.connected && (v.state === 'ready' || v.state === 'busy')) {
        m.upAfterS = (Date.now() - m.startedAt) / 1000;
        say(`${m.node.name} is up (${firmwareLabel(m.node)}, ${v.ip ?? m.node.ip}): PXE boot to agent in ${m.upAfterS.toFixed(0)} s`);
      }
      const pid = readPid(pidFile(s.stateDir, m.node.name));
      if (m.upAfterS === undefined && (pid === undefined || !isOurs(pid, s.stateDir)))
        throw new DemoError(`${m.node.name}: QEMU exited; its console (${m.consoleLog}) ends:\n${consoleTail(m.consoleLog)}`);
    }
    const waiting = machines.filter((m) => m.upAfterS === undefined);
    if (waiting.length === 0) return;
    if (Date.now() > deadline)
      throw new DemoError(
        `not up after ${s.bootTimeoutS} s: ${waiting.map((m) => m.node.name).join(', ')} (DEMO_BOOT_TIMEOUT raises the limit)\n` +
          waiting.map((m) => `--- ${m.node.name} console (${m.consoleLog}):\n${consoleTail(m.consoleLog)}`).join('\n'),
      );
    if (Date.now() - lastReport >= WAIT_REPORT_EVERY_MS) {
      lastReport = Date.now();
      for (const m of waiting) {
        const v = views.find((x) => x.mac === m.node.mac);
        const stage = v?.bootStage ? `last boot step: ${v.bootStage.stage}` : 'no DHCP request yet (firmware starting)';
        const typical = TYPICAL_BOOT_S[m.node.firmware][accel];
        say(
          `waiting for ${m.node.name} to boot (${firmwareLabel(m.node)}, ~${typical} s under ${accel.toUpperCase()})... ${elapsed(m.startedAt)}, ${stage}`,
        );
      }
    }
    await sleep(1000);
  }
}

function consoleTail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'latin1')
      .replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '')
      .split('\n')
      .slice(-lines)
      .join('\n');
  } catch {
    return '(no console output)';
  }
}

// ---------------------------------------------------------------------------------------
// The job

function ctlEnv(s: DemoSettings): NodeJS.ProcessEnv {
  return { ...process.env, LILCLUSTER_URL: API, LILCLUSTER_DATA_DIR: s.dataDir };
}

/** Runs dispatcherctl; its stderr (the progress bar) goes to the terminal, its stdout is returned. */
function dispatcherctl(s: DemoSettings, args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [join(s.repoRoot, 'dist/bin/dispatcherctl.mjs'), ...args], {
      env: ctlEnv(s),
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
    child.once('error', rej);
    child.once('exit', (code) => res({ code, out }));
  });
}

async function runJob(s: DemoSettings): Promise<{ jobId: number; seconds: number; jsonl: string }> {
  const params = join(s.stateDir, 'seeds.csv');
  writeFileSync(params, ['seed', ...Array.from({ length: s.tasks }, (_, i) => String(i + 1))].join('\n') + '\n');
  const jobDir = join(s.repoRoot, 'demo/job');
  const args = [
    'submit',
    '--params',
    params,
    '--inputs',
    jobDir,
    '--name',
    'pi-monte-carlo',
    '--timeout',
    String(TASK_TIMEOUT_S),
    '--wait',
    '--',
    'node',
    'pi.js',
    '{seed}',
    String(s.samples),
  ];
  say(`submitting the job: ${s.tasks} tasks, each a Monte-Carlo estimate of π from one seed (${s.samples.toLocaleString('en')} samples)`);
  process.stdout.write(`    $ dispatcherctl ${args.map((a) => (a.startsWith('/') ? relative(process.cwd(), a) || a : a)).join(' ')}\n`);
  const started = Date.now();
  // Exit 1 means some tasks failed: the results still come back, and the checks name them.
  const submit = await dispatcherctl(s, args);
  checkNotStopping();
  const jobId = Number(submit.out.trim().split('\n')[0]);
  if (!Number.isInteger(jobId) || jobId <= 0)
    throw new DemoError(`dispatcherctl submit failed (exit ${submit.code}) and printed no job id`);
  const seconds = (Date.now() - started) / 1000;
  const results = await dispatcherctl(s, ['results', String(jobId), '--format', 'jsonl']);
  if (results.code !== 0) throw new DemoError(`dispatcherctl results ${jobId} exited with ${results.code}`);
  return { jobId, seconds, jsonl: results.out };
}

// ---------------------------------------------------------------------------------------
// up / stop

async function up(s: DemoSettings): Promise<number> {
  checkBuilt(s);
  mkdirSync(s.stateDir, { recursive: true });
  const left = await teardown(s);
  if (left.length) say(`removed what an earlier run left: ${left.join(', ')}`);
  await checkAddressesFree(s);

  const accel =
    s.accel === 'auto' ? await chooseAccel(join(s.repoRoot, 'dist/image/vmlinuz')) : { accel: s.accel, why: `DEMO_ACCEL=${s.accel}` };
  say(`accelerator: ${accel.accel.toUpperCase()} (${accel.why})`);

  rmSync(s.dataDir, { recursive: true, force: true });
  writeFileSync(join(s.stateDir, 'cluster.yaml'), clusterFileText(s.nodes));

  await createBridge();
  const loginUrl = await startDispatcher(s);
  await startForwarder(s);
  const localLogin = loginUrl.replace(`//${DISPATCHER_IP}:${DISPATCHER_PORT}`, `//localhost:${s.localPort}`);
  say(`dispatcher: full DHCP on ${BRIDGE} (${DHCP_RANGE}), TFTP, HTTP on ${API} (also http://localhost:${s.localPort})`);
  say(`dashboard, live from now on: ${localLogin}`);
  await createTaps(s.nodes);
  say(`network: bridge ${BRIDGE} ${DISPATCHER_IP}/24 with taps ${s.nodes.map((n) => n.tap).join(', ')} (nothing else attached)`);

  const machines: Booting[] = [];
  for (const node of s.nodes) machines.push(await startMachine(s, node, accel.accel));
  say(
    `powered on ${s.nodes.map((n) => `${n.name} (${firmwareLabel(n)}, ${n.mac})`).join(', ')}: no disk, ${s.memoryMiB} MiB each, booting from the network`,
  );
  const bootStart = Date.now();
  await waitForNodes(s, machines, accel.accel);
  say(`all ${machines.length} nodes up in ${((Date.now() - bootStart) / 1000).toFixed(0)} s`);

  const job = await runJob(s);
  const summary = summarize(parseResults(job.jsonl));
  const wrong = problems(summary, { tasks: s.tasks, nodes: s.nodes.map((n) => n.name), tolerance: PI_TOLERANCE });
  const err = Math.abs(summary.estimate - Math.PI);
  say(
    `π ≈ ${summary.estimate.toFixed(6)} (|π̂ − π| = ${err.toFixed(6)}) from ${summary.samples.toLocaleString('en')} samples in ` +
      `${summary.done} tasks, job ${job.jobId} ran ${job.seconds.toFixed(0)} s`,
  );
  for (const n of s.nodes)
    console.log(`    ${n.name} (${firmwareLabel(n)})  ${String(summary.perNode.get(n.name) ?? 0).padStart(4)} tasks`);
  for (const p of wrong) console.log(`    PROBLEM: ${p}`);
  console.log(`    boot times: ${machines.map((m) => `${m.node.name} ${firmwareLabel(m.node)} ${m.upAfterS!.toFixed(0)} s`).join(', ')}`);

  if (s.exitWhenDone) {
    say('tearing down (DEMO_EXIT=1)');
    await teardown(s);
    const still = await leftovers(s);
    if (still.length) {
      console.log(`    PROBLEM: left behind: ${still.join(', ')}`);
      return 1;
    }
    say(`torn down: no process or interface left${wrong.length ? '' : '; demo passed'}`);
    return wrong.length ? 1 : 0;
  }

  const rel = relative(process.cwd(), s.stateDir) || s.stateDir;
  const last = s.nodes[s.nodes.length - 1]!.name;
  console.log(`
The cluster keeps running.
  Dashboard (log-in link; its buttons need it):  ${localLogin}
  The CLI, from this folder:
    export LILCLUSTER_DATA_DIR=${s.dataDir}${s.localPort === DISPATCHER_PORT ? '' : `  LILCLUSTER_URL=http://localhost:${s.localPort}`}
    alias dispatcherctl="node ${join(s.repoRoot, 'dist/bin/dispatcherctl.mjs')}"
    dispatcherctl nodes                      # the machines, their state and tasks
    dispatcherctl exec node2 -- uname -a     # run a command on a node now
    dispatcherctl reboot ${last}               # it PXE-boots again and comes back as ${last}
    dispatcherctl boot-log node2             # its boot, step by step
    dispatcherctl results ${job.jobId} | head      # the job's results
  Logs: ${rel}/dispatcher.log, ${rel}/node1.console.log ...
  Stop everything: make demo-stop`);
  return wrong.length ? 1 : 0;
}

async function stop(s: DemoSettings): Promise<number> {
  const gone = await teardown(s);
  console.log(gone.length ? `make demo-stop: stopped ${gone.join(', ')}` : 'make demo-stop: nothing was running');
  const still = await leftovers(s);
  if (still.length) {
    console.error(`make demo-stop: still there: ${still.join(', ')}`);
    return 1;
  }
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [cmd = 'up', ...rest] = argv;
  if (cmd === 'forward') {
    const [listen, target] = rest;
    const [lh, lp] = (listen ?? '').split(':');
    const [th, tp] = (target ?? '').split(':');
    await forward(lh!, Number(lp), th!, Number(tp));
    return -1; // keeps serving until SIGTERM
  }
  const s = demoSettings(process.env, REPO_ROOT);
  if (cmd === 'stop') return stop(s);
  if (cmd !== 'up') {
    console.error('usage: demo.mjs up|stop');
    return 2;
  }
  const onSignal = (sig: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    process.stdout.write(`\n[${elapsed()}] ${sig}: tearing everything down\n`);
    // Twice: a machine being started while the first pass ran is caught by the second.
    void teardown(s)
      .then(() => sleep(500))
      .then(() => teardown(s))
      .then(async () => {
        const still = await leftovers(s);
        say(still.length ? `still there: ${still.join(', ')}` : 'torn down: no process or interface left');
      })
      .finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await up(s);
  } catch (err) {
    if (stopping) return new Promise<number>(() => {}); // the signal handler exits
    console.error(`\nmake demo failed: ${(err as Error).message}`);
    say('tearing down');
    await teardown(s).catch(() => undefined);
    console.error(`logs kept in ${s.stateDir}`);
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (err: unknown) => {
    console.error(err instanceof SettingsError ? `make demo: ${err.message}` : err);
    process.exit(err instanceof SettingsError ? 2 : 1);
  },
);
