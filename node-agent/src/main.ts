/**
 * `node-agent`: runs on every compute node (inside the RAM image, or on any Linux host).
 * Prints its version and addresses, connects to the dispatcher (config.ts says from where it
 * takes its settings), asks for tasks while it has free slots, runs them, and reports back.
 */
import { networkInterfaces, availableParallelism, tmpdir } from 'node:os';
import { existsSync, readFileSync, readdirSync, rmSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { KeyObject } from 'node:crypto';
import { Command } from 'commander';
import { parseDispatcherPublicKey } from '../../dispatcher/src/protocol/session.js';
import { AGENT_USER_AGENT_PREFIX } from '../../dispatcher/src/protocol/messages.js';
import { AgentConfigError, defaultWorkRoot, parseKernelCmdline, resolveSettings, type AgentFlags, type AgentSettings } from './config.js';
import { Agent } from './agent.js';
import { DispatcherConnection, SESSION_CREDENTIAL_FILE } from './connection.js';
import { ProcessRunner, DEFAULT_MAX_INPUT_BYTES, DEFAULT_MAX_OUTPUTS_BYTES, defaultLauncher } from './runner.js';
import { Outbox } from './outbox.js';
import { SystemInventory } from './inventory.js';
import { rootIsInRam } from './hardware.js';
import { SystemPower } from './power.js';
import { DEFAULT_KEXEC } from './kexec.js';
import { bootedImage, healthOf, readCmdline } from './booted-image.js';
import { HealthChecker } from './health-check.js';
import { killOrphanTasks } from './proc.js';
import { waitForFile } from './wait-file.js';
import { describeTaskRoot, loadTaskRoot, parseTaskRootEnv, defaultChroot } from './task-root.js';
import { countGpus, defaultTaskMemMiB, TaskCgroups } from './cgroup.js';
import type { NodeResources } from '../../dispatcher/src/protocol/messages.js';

declare const __LILCLUSTER_VERSION__: string | undefined;
const VERSION = typeof __LILCLUSTER_VERSION__ === 'string' ? __LILCLUSTER_VERSION__ : '0.1.0-dev';

/** exec commands from the operator without a timeout of their own. */
const EXEC_TIMEOUT_MS = 60_000;

function say(line: string): void {
  process.stdout.write(`node-agent: ${line}\n`);
}

function readMounts(): string {
  try {
    return readFileSync('/proc/mounts', 'utf8');
  } catch {
    return '';
  }
}

function loadKey(s: AgentSettings): KeyObject | null {
  if (!s.key) return null;
  const text = s.key.kind === 'file' ? readFileSync(s.key.path, 'utf8') : s.key.b64;
  const from = s.key.kind === 'file' ? s.key.path : s.key.from;
  try {
    return parseDispatcherPublicKey(text);
  } catch (err) {
    throw new AgentConfigError(`dispatcher key from ${from}: ${(err as Error).message}`);
  }
}

const int = (v: string) => Number(v);

const program = new Command('node-agent')
  .description('lilcluster node agent: pulls tasks from the dispatcher and runs them')
  .version(VERSION)
  .option(
    '--dispatcher <url>',
    'the dispatcher, e.g. http://10.42.0.1:8080, or every one of a leader and its standbys, URL1,URL2 (env LC_DISPATCHER, kernel lc.dispatcher=)',
  )
  .option('--token <token>', 'per-boot token from the boot script (env LC_TOKEN, kernel lc.token=)')
  .option('--enroll-token <token>', "the dispatcher's enrollment token, for hosts that did not PXE-boot (env LC_ENROLL_TOKEN)")
  .option(
    '--dispatcher-key <file>',
    "the dispatcher's public key (identity.pub) (env LC_PUBKEY_FILE; default /etc/lilcluster/dispatcher.pub)",
  )
  .option('--insecure', 'run without verifying the dispatcher (no key configured): anyone on the network could send commands')
  .option('--slots <n>', 'tasks run at once (default: CPU count)', int)
  .option('--prefetch <n>', 'tasks asked for beyond the free slots, so a slot never waits for a round trip (default 0)', int)
  .option(
    '--work-dir <dir>',
    'task work dirs and undelivered results (default <tmp>/lc-agent-<mac>, <tmp> being /tmp if it is a tmpfs, else /dev/shm)',
  )
  .option('--max-output <bytes>', 'stdout and stderr kept per task, each (default 1 MiB)', int)
  .option('--mac <mac>', "this node's MAC, when the NIC that reaches the dispatcher is not the one to report (env LC_MAC)")
  .option('--allow-power', 'obey reboot/poweroff on a host that is not a RAM-booted node')
  .option(
    '--dispatcher-file <file>',
    'wait for this file, then take the dispatcher URL from it (env LC_DISPATCHER_FILE; the RAM image starts the agent before its network is up)',
  )
  .option('--kill-grace <ms>', 'SIGTERM→SIGKILL grace at a task timeout or cancel (default 3000)', int)
  .option('--task-memory <MiB>', 'memory handed out to tasks (env LC_TASK_MEMORY; default: available at start less the reserve)')
  .option('--reserve-memory <MiB>', 'memory kept for the agent, never handed to tasks (env LC_RESERVE_MEMORY; default 128)')
  .option('--gpus <n>', 'GPUs handed out to tasks (env LC_GPUS; default: the /dev/nvidiaN devices)');

async function main(): Promise<void> {
  program.parse();
  const o = program.opts();
  const dispatcherFile: string | undefined = o.dispatcherFile ?? process.env.LC_DISPATCHER_FILE;
  if (dispatcherFile) {
    say(`waiting for the network: the dispatcher's URL comes in ${dispatcherFile}`);
    o.dispatcher = (await waitForFile(dispatcherFile)).trim();
  }
  const addrs = Object.entries(networkInterfaces()).flatMap(([name, list]) =>
    (list ?? []).filter((a) => !a.internal).map((a) => `${name} ${a.address} ${a.mac}`),
  );
  console.log(`node-agent ${VERSION} on node ${process.version}`);
  console.log(`addresses: ${addrs.length ? addrs.join(', ') : '(none)'}`);

  const flags: AgentFlags = {
    dispatcher: o.dispatcher,
    token: o.token,
    enrollToken: o.enrollToken,
    dispatcherKey: o.dispatcherKey,
    insecure: o.insecure,
    slots: o.slots,
    prefetch: o.prefetch,
    workDir: o.workDir,
    maxOutput: o.maxOutput,
    mac: o.mac,
    allowPower: o.allowPower,
    killGraceMs: o.killGrace,
    taskMemory: o.taskMemory,
    reserveMemory: o.reserveMemory,
    gpus: o.gpus,
  };
  const cmdline = readCmdline();
  const settings = resolveSettings(flags, process.env, parseKernelCmdline(cmdline), {
    cpuCount: availableParallelism(),
    fileExists: existsSync,
    tmpDir: defaultWorkRoot(readMounts(), tmpdir()),
  });
  const key = loadKey(settings);
  if (!key && settings.insecure) {
    for (let i = 0; i < 3; i++)
      say('!!! INSECURE MODE: the dispatcher is not verified; anyone on this network can make this node run commands !!!');
  } else if (!key) {
    say('no dispatcher key configured: the agent will connect but refuse to run anything (give --dispatcher-key FILE, or --insecure)');
  } else if (settings.key?.kind === 'inline') {
    say('using the dispatcher key from the kernel command line (weaker than a key in the image)');
  }

  const tasksDir = join(settings.workDir, 'tasks');
  const chroot = defaultChroot();
  const fromEnv = parseTaskRootEnv(process.env, chroot);
  const orphans = killOrphanTasks(tasksDir, fromEnv.kind === 'root' ? fromEnv.root.dir : undefined);
  if (orphans.length) say(`killed ${orphans.length} task(s) left running by a previous agent`);
  rmSync(tasksDir, { recursive: true, force: true }); // work dirs of a previous run: their tasks are gone
  mkdirSync(tasksDir, { recursive: true });
  // After the tasks dir exists: the check looks for it inside the root.
  const taskRoot = loadTaskRoot(process.env, tasksDir, chroot);
  say(describeTaskRoot(taskRoot));
  const booted = bootedImage(cmdline, healthOf(taskRoot));
  if (booted.problem) say(`!!! ${booted.problem}`);
  if (booted.image) say(`booted image ${booted.image.name}@${booted.image.version} by ${booted.image.via}`);
  const inventory = new SystemInventory();
  const resources = taskResources(settings);
  say(
    `tasks get ${resources.cores} cores, ${resources.memMiB} MiB${resources.gpus ? `, ${resources.gpus} GPUs` : ''}; ` +
      (resources.enforced ? `held to their requests by cgroup v2 (${resources.cgroups!.base})` : `not enforced: ${resources.why}`),
  );
  const { launcher, note } = defaultLauncher();
  const userAgent = `${AGENT_USER_AGENT_PREFIX}${VERSION}`;
  say(note);
  const runner = new ProcessRunner({
    tasksDir,
    maxOutputBytes: settings.maxOutputBytes,
    maxOutputsBytes: DEFAULT_MAX_OUTPUTS_BYTES,
    maxInputBytes: DEFAULT_MAX_INPUT_BYTES,
    killGraceMs: settings.killGraceMs,
    // Inputs come from the dispatcher the agent talks to (one of several: a leader and its standbys).
    get httpBase() {
      return source.httpBase;
    },
    userAgent,
    launcher,
    taskRoot,
    ...(resources.cgroups ? { cgroups: resources.cgroups } : {}),
  });
  const reporter = new Outbox(join(settings.workDir, 'outbox'), say);
  if (reporter.size) say(`${reporter.size} results from a previous run wait for delivery`);
  const source = new DispatcherConnection({
    url: settings.dispatchers.map((d) => d.wsUrl),
    auth: settings.auth,
    credentialFile: join(settings.workDir, SESSION_CREDENTIAL_FILE),
    mac: settings.mac,
    dispatcherKey: key,
    insecure: settings.insecure,
    slots: settings.slots,
    resources: resources.node,
    agentVersion: VERSION,
    ...(booted.image ? { image: booted.image } : {}),
    inventory: () => inventory.collect(),
    say,
  });
  const power = new SystemPower({
    ramRoot: rootIsInRam(readMounts()),
    allowPower: settings.allowPower,
    kexec: { ...DEFAULT_KEXEC, userAgent },
  });
  const health = new HealthChecker({
    runner,
    say,
    send: (run) => source.send({ type: 'health', ...run }),
    released: () => agent.topUp(),
  });
  const agent = new Agent(
    { source, runner, reporter, inventory, power },
    {
      slots: settings.slots,
      prefetch: settings.prefetch,
      execTimeoutMs: EXEC_TIMEOUT_MS,
      say,
      resources: resources.node,
      onSession: (s) => health.configure(s.healthCheck),
      holdTasks: () => health.holding,
    },
  );
  say(
    `dispatcher ${settings.dispatchers.map((d) => d.wsUrl).join(', ')}, ${settings.slots} slots, work dir ${settings.workDir}${settings.mac ? `, MAC ${settings.mac}` : ''}`,
  );
  agent.start();

  const stop = (sig: string) => {
    say(`${sig}: stopping (running tasks are killed)`);
    health.stop();
    agent.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
}

/** What tasks get here, and the cgroups that hold them to it where cgroup v2 allows. */
function taskResources(s: AgentSettings): {
  cores: number;
  memMiB: number;
  gpus: number;
  node: NodeResources;
  enforced: boolean;
  cgroups?: TaskCgroups;
  why?: string;
} {
  const read = (p: string) => {
    try {
      return readFileSync(p, 'utf8');
    } catch {
      return '';
    }
  };
  let devs: string[] = [];
  try {
    devs = readdirSync('/dev');
  } catch {
    /* no /dev: no GPU */
  }
  const memMiB = s.taskMemMiB ?? defaultTaskMemMiB(read('/proc/meminfo'), s.reserveMiB);
  const gpus = s.gpus ?? countGpus(devs);
  const setup = TaskCgroups.setup({
    mounts: readMounts(),
    selfCgroup: read('/proc/self/cgroup'),
    taskMemMiB: memMiB,
    reserveMiB: s.reserveMiB,
    name: s.mac ? s.mac.replaceAll(':', '') : String(process.pid),
  });
  const node: NodeResources = { cores: s.slots, memMiB, gpus, enforced: setup.enforced };
  return setup.enforced
    ? { cores: s.slots, memMiB, gpus, node, enforced: true, cgroups: setup.cgroups }
    : { cores: s.slots, memMiB, gpus, node, enforced: false, why: setup.reason };
}

main().catch((err: unknown) => {
  if (err instanceof AgentConfigError) {
    process.stderr.write(`node-agent: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`node-agent: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
