/**
 * `dispatcher`: the one process on the head machine. Serves DHCP (full or proxy), TFTP and
 * HTTP (:8080) so bare machines PXE-boot the RAM image, tracks nodes, and dispatches tasks.
 */
import { Command, Option } from 'commander';
import {
  resolveConfig,
  loadConfigFile,
  parseRange,
  type ConfigOverrides,
  DEFAULT_DATA_DIR,
  DEFAULT_HTTP_PORT,
  DEFAULT_IMAGE_DIR,
  DEFAULT_IMAGES_DIR,
  DEFAULT_PXE_DIR,
} from './config.js';
import { DispatcherError } from './errors.js';
import { createLogger } from './log.js';
import { VERSION } from './version.js';
import { startDispatcher } from './server.js';
import { startSharedDispatcher } from './ha/start-shared.js';
import { startBootServer } from './boot-server/start.js';

const program = new Command('dispatcher')
  .description('Diskless cluster dispatcher: PXE boot services, node registry, task dispatch, web status on :8080')
  .version(VERSION)
  .option('-c, --config <file>', 'YAML configuration file (flags override it)')
  .option('-i, --interface <if>', 'network interface of the node network; DHCP and TFTP answer only there (required with --dhcp full)')
  .addOption(
    new Option('--dhcp <mode>', 'full: addresses and boot info; proxy: boot info beside another DHCP server; off: no DHCP').choices([
      'full',
      'proxy',
      'off',
    ]),
  )
  .option(
    '--range <first-last>',
    'addresses handed out in full mode, e.g. 10.42.0.100-10.42.0.199 (default: .100-.249 of the interface subnet)',
  )
  .option('--advertise-address <ip>', "the dispatcher's address as nodes reach it (default: the interface's address)")
  .option('--http-port <port>', `HTTP port for boot files, API, agents and web page (default ${DEFAULT_HTTP_PORT})`, toInt)
  .option('--http-host <addr>', 'address the HTTP server listens on (default 0.0.0.0)')
  .option('--tftp-port <port>', 'TFTP port (default 69)', toInt)
  .option('--no-tftp', 'do not serve TFTP')
  .option('--data-dir <dir>', `state: database, tokens, keys (default ${DEFAULT_DATA_DIR})`)
  .option('--image <dir>', `the image named default: vmlinuz, initrd.img, manifest.json (default ${DEFAULT_IMAGE_DIR})`)
  .option('--images <dir>', `named images, a folder each (default ${DEFAULT_IMAGES_DIR}; make image IMAGE=<name>)`)
  .option('--pxe-dir <dir>', `iPXE first-stage binaries (default ${DEFAULT_PXE_DIR}; \`make pxe\` fills it)`)
  .option('--cluster <file>', 'cluster definition file (YAML): known nodes, labels, enrollment policy')
  .option('--lease-seconds <n>', 'DHCP lease time (default 3600)', toInt)
  .option('--heartbeat <seconds>', 'agent heartbeat interval (default 5)', Number)
  .option('--kernel-args <args>', 'extra kernel command-line arguments for every node')
  .option('--log-level <level>', 'trace, debug, info, warn, error (default info)')
  .option(
    '--store <url>',
    'postgres://USER:PASSWORD@HOST:PORT/DB: the state in PostgreSQL, shared with standby dispatchers (default: SQLite in the data dir)',
  )
  .option('--peers <urls>', "every dispatcher's URL as nodes reach it, comma-separated (agents try each in turn)")
  .addOption(
    new Option('--role <role>', 'dispatcher: the head machine; boot: a boot server of another segment (needs --leader)').choices([
      'dispatcher',
      'boot',
    ]),
  )
  .option('--leader <url>', "role boot: the leader's URL as this segment reaches it, e.g. http://10.42.0.1:8080")
  .option('--leader-token-file <file>', 'role boot: the token of `dispatcherctl boot-server add NAME` (default <data-dir>/leader.token)')
  .addHelpText(
    'after',
    `
Examples:
  dispatcher --interface eth1 --dhcp full --range 10.42.0.100-10.42.0.199
  dispatcher --dhcp proxy --interface eth0          # beside an existing DHCP server
  dispatcher --config /etc/lilcluster/dispatcher.yaml

The YAML file takes the same settings in camelCase (interface, httpPort, dataDir, imageDir, imagesDir,
dhcp: {mode, range, leaseSeconds, leaseCacheThreshold, router, dns}, clusterFile, ...).`,
  );

function toInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n)) throw new Error(`not an integer: ${v}`);
  return n;
}

async function main(): Promise<void> {
  program.parse();
  const o = program.opts();
  const fromFile: ConfigOverrides = o.config ? loadConfigFile(o.config) : {};
  const fromFlags: ConfigOverrides = {
    interface: o.interface,
    advertiseAddress: o.advertiseAddress,
    httpPort: o.httpPort,
    httpHost: o.httpHost,
    tftpPort: o.tftpPort,
    tftp: o.tftp === false ? false : undefined,
    dataDir: o.dataDir,
    imageDir: o.image,
    imagesDir: o.images,
    pxeDir: o.pxeDir,
    clusterFile: o.cluster,
    heartbeatSeconds: o.heartbeat,
    kernelArgs: o.kernelArgs,
    logLevel: o.logLevel,
    store: o.store,
    peers: o.peers
      ? String(o.peers)
          .split(',')
          .map((p: string) => p.trim())
          .filter(Boolean)
      : undefined,
    role: o.role,
    leader: o.leader,
    leaderTokenFile: o.leaderTokenFile,
    dhcp: { mode: o.dhcp, leaseSeconds: o.leaseSeconds, ...(o.range ? parseRange(o.range) : {}) },
  };
  const config = resolveConfig(fromFile, fromFlags);
  const log = createLogger({ level: config.logLevel });
  const running =
    config.role === 'boot'
      ? await startBootServer({ config, log })
      : config.store
        ? await startSharedDispatcher({ config, log })
        : await startDispatcher({ config, log });
  const stop = (sig: string) => {
    log.info({ sig }, 'stopping');
    running.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
}

main().catch((err: unknown) => {
  if (err instanceof DispatcherError) {
    process.stderr.write(`dispatcher: ${err.message}\n${err.hint ? `  hint: ${err.hint}\n` : ''}`);
    process.exit(2);
  }
  process.stderr.write(`dispatcher: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
