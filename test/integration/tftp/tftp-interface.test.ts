/**
 * The TFTP socket answers only on the configured interface (SO_BINDTOIFINDEX), even for a
 * packet addressed to that interface's address that arrives through another one. Needs
 * root: three network namespaces joined by two veth pairs.
 *
 *   ns A (client)  10.97.1.2 ── veth ── 10.97.1.1  ns SRV (dispatcher --interface <veth a>)
 *   ns B (client)  10.97.2.2 ── veth ── 10.97.2.1  ns SRV (routes 10.97.1.0/24 through it)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { makeBootTree, type BootTree } from '../../lab/boot-tree.js';
import { startDispatcher, type DispatcherProcess } from '../../lab/dispatcher.js';

const run = promisify(execFile);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const id = `${process.pid % 100000}`;
const NS = { srv: `lc-tftp-s${id}`, a: `lc-tftp-a${id}`, b: `lc-tftp-b${id}` };
const IF = { srvA: `lcts${id}a`, cliA: `lctc${id}a`, srvB: `lcts${id}b`, cliB: `lctc${id}b` };
const isRoot = process.getuid?.() === 0;

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' });
const inNs = (ns: string, ...args: string[]) => ip('netns', 'exec', ns, ...args);

function teardown() {
  for (const ns of Object.values(NS)) {
    try {
      ip('netns', 'del', ns);
    } catch {
      /* not there */
    }
  }
}

let tree: BootTree;
let d: DispatcherProcess | undefined;

describe.runIf(isRoot)('TFTP bound to one interface', () => {
  beforeAll(async () => {
    teardown();
    process.once('exit', teardown);
    for (const ns of Object.values(NS)) ip('netns', 'add', ns);
    for (const [srvIf, cliIf, cliNs, net] of [
      [IF.srvA, IF.cliA, NS.a, '10.97.1'],
      [IF.srvB, IF.cliB, NS.b, '10.97.2'],
    ] as const) {
      ip('link', 'add', srvIf, 'netns', NS.srv, 'type', 'veth', 'peer', 'name', cliIf, 'netns', cliNs);
      inNs(NS.srv, 'ip', 'addr', 'add', `${net}.1/24`, 'dev', srvIf);
      inNs(NS.srv, 'ip', 'link', 'set', srvIf, 'up');
      inNs(cliNs, 'ip', 'addr', 'add', `${net}.2/24`, 'dev', cliIf);
      inNs(cliNs, 'ip', 'link', 'set', cliIf, 'up');
      inNs(cliNs, 'ip', 'link', 'set', 'lo', 'up');
    }
    inNs(NS.srv, 'ip', 'link', 'set', 'lo', 'up');
    inNs(NS.b, 'ip', 'route', 'add', '10.97.1.0/24', 'via', '10.97.2.1');
    tree = makeBootTree();
    d = await startDispatcher({ ns: NS.srv, loopback: true, tftp: true, boot: tree, args: ['--interface', IF.srvA] });
  });

  afterAll(async () => {
    await d?.stop();
    teardown();
  });

  it('serves a client on the configured interface', async () => {
    const file = join(tree.dir, 'from-a');
    await run('ip', ['netns', 'exec', NS.a, 'tftp', '-m', 'binary', '10.97.1.1', String(d!.tftpPort), '-c', 'get', 'undionly.kpxe', file], {
      timeout: 20_000,
    });
    expect(sha(readFileSync(file))).toBe(sha(tree.files['undionly.kpxe']!));
    expect(d!.logs.some((l) => l.msg === 'TFTP listening' && l.interface === IF.srvA)).toBe(true);
  });

  it.each([
    ['the other interface address', '10.97.2.1'],
    ['the configured interface address, routed in through the other interface', '10.97.1.1'],
  ])('does not answer a client on another interface sending to %s', async (_n, target) => {
    const file = join(tree.dir, `from-b-${target}`);
    // tftp-hpa retries for 25 s; 3 s of silence is enough to know nobody answers
    const r = await run('ip', [
      'netns',
      'exec',
      NS.b,
      'timeout',
      '3',
      'tftp',
      '-m',
      'binary',
      target,
      String(d!.tftpPort),
      '-c',
      'get',
      'undionly.kpxe',
      file,
    ]).catch((e: { code: number; stdout: string }) => e);
    expect((r as { code?: number }).code).toBe(124);
    expect(existsSync(file) ? statSync(file).size : 0).toBe(0);
  });
});
