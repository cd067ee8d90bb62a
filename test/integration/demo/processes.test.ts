/**
 * How `make demo-stop` finds what to stop (demo/processes.ts): by pid file, or by a scan
 * of /proc for the demo's own command lines naming its state dir — and never anything else,
 * such as a user's `tail -f` of a demo log. Real processes; their argv[0] is set to what QEMU
 * or Node would show.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { isDemoCommand, isOurs, ownProcesses, pidFile, stopAll } from '../../../demo/processes.js';

const stateDir = mkdtempSync(join(tmpdir(), 'lc-demo-procs-'));
const children: ChildProcess[] = [];

/**
 * A process that waits a minute with exactly the command line `argv0 script ...args`: Node
 * running `script` (a file that just waits), started under the name `argv0`.
 */
function fake(argv0: string, script: string, args: string[]): ChildProcess {
  const file = join(stateDir, 'fake', script);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, 'setTimeout(() => {}, 60_000);\n');
  const c = spawn(process.execPath, [file, ...args], { argv0, stdio: 'ignore' });
  children.push(c);
  return c;
}

afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(stateDir, { recursive: true, force: true });
});

const alive = (c: ChildProcess) => c.exitCode === null && c.signalCode === null;

describe("the demo's processes", () => {
  it.each([
    [
      'QEMU with its console in the state dir',
      ['qemu-system-x86_64', '-name', 'node1', '-chardev', `file,id=s,path=${stateDir}/node1.console.log`],
      true,
    ],
    ['the dispatcher with its data dir there', ['/usr/bin/node', '/repo/dist/bin/dispatcher.mjs', '--data-dir', `${stateDir}/data`], true],
    [
      'the forwarder',
      ['/usr/bin/node', '/repo/dist/demo/demo.mjs', 'forward', '127.0.0.1:8080', '10.77.0.1:8080', '--state', stateDir],
      true,
    ],
    ["a user's tail -f of the dispatcher log", ['tail', '-f', `${stateDir}/dispatcher.log`], false],
    ['a node script reading a console log', ['/usr/bin/node', '/home/me/watch.mjs', `${stateDir}/node1.console.log`], false],
    ['demo.mjs up (the orchestrator itself)', ['/usr/bin/node', '/repo/dist/demo/demo.mjs', 'up', stateDir], false],
    ['QEMU of someone else', ['qemu-system-x86_64', '-name', 'other', '-chardev', 'file,id=s,path=/tmp/other.log'], false],
  ] as const)('%s: ours = %s', (_what, args, ours) => {
    expect(isDemoCommand(args, stateDir)).toBe(ours);
  });

  it('stopAll stops them by pid file or by scan, leaves bystanders alone, and removes the pid files', async () => {
    // QEMU writes its own pid file; the forwarder lost its one (a crashed run).
    const qemu = spawn('sleep', ['60'], { stdio: 'ignore' });
    children.push(qemu);
    const byFile = fake('qemu-system-x86_64', 'qemu.mjs', ['-name', 'node1', '-chardev', `file,id=s,path=${stateDir}/node1.console.log`]);
    writeFileSync(pidFile(stateDir, 'node1'), `${byFile.pid}\n`);
    const byScan = fake('/usr/bin/node', 'dist/demo/demo.mjs', ['forward', '127.0.0.1:8080', '10.77.0.1:8080', '--state', stateDir]);
    const tail = fake('tail', 'tail.mjs', ['-f', `${stateDir}/dispatcher.log`]);
    // A pid file naming a process that is not ours (a recycled PID): never signalled.
    writeFileSync(pidFile(stateDir, 'dispatcher'), `${qemu.pid}\n`);
    await sleep(200);
    expect(isOurs(byFile.pid!, stateDir)).toBe(true);
    expect(isOurs(qemu.pid!, stateDir)).toBe(false);
    expect(
      ownProcesses(stateDir)
        .map((p) => p.pid)
        .sort(),
    ).toEqual([byFile.pid, byScan.pid].sort());

    const stopped = await stopAll(stateDir);
    expect(stopped).toHaveLength(2);
    await sleep(100);
    expect(alive(byFile)).toBe(false);
    expect(alive(byScan)).toBe(false);
    expect(alive(tail)).toBe(true);
    expect(alive(qemu)).toBe(true);
    expect(existsSync(pidFile(stateDir, 'node1'))).toBe(false);
    expect(existsSync(pidFile(stateDir, 'dispatcher'))).toBe(false);
    expect(ownProcesses(stateDir)).toEqual([]);
  });
});
