/**
 * `dispatcherctl` (the built bundle, as a process) against a dispatcher whose agents are the
 * in-memory NodeControl fake: every command's human and --json output, exit codes, tokens,
 * unknown nodes named in the error. (ctl-agents.test.ts does the same with real agents.)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startTestDispatcher, testMac, type TestDispatcher } from '../../lab/in-process-dispatcher.js';
import { FakeControl } from '../../lab/fake-control.js';
import { baseEnv, runCtl, startCtl, waitUntil } from '../../lab/run-ctl.js';
import { EXIT } from '../../../dispatcher/src/ctl/errors.js';
import type { NodeList, OperationView, StatusView } from '../../../dispatcher/src/api/schemas.js';
import { parseMac, type Mac } from '../../../dispatcher/src/nodes/mac.js';

const RACK1 = parseMac('52:54:00:00:01:00') as Mac;

let d: TestDispatcher;
let control: FakeControl;
let env: Record<string, string>;
let admin: Record<string, string>;

beforeAll(async () => {
  const dir = (await import('node:fs')).mkdtempSync(join((await import('node:os')).tmpdir(), 'lc-op-cluster-'));
  const clusterFile = join(dir, 'cluster.yaml');
  writeFileSync(clusterFile, `enrollment: approve\nnodes:\n  - {name: rack1, mac: "${RACK1}", labels: [gpu]}\n`);
  d = await startTestDispatcher({ clusterFile });
  control = new FakeControl(d.core.nodes);
  d.operator.attachControl(control);
  for (let i = 1; i <= 4; i++) {
    d.core.nodes.admit(testMac(i));
    d.core.nodes.approve(`node${i}`);
    control.connect(testMac(i), {
      load1: i / 4,
      running: i === 3 ? [{ taskId: 42, attempt: 1, progress: 0.5, startedAt: Date.now() }] : [],
    });
  }
  d.core.nodes.admit(testMac(5)); // node5: waits for approval
  env = baseEnv(d.url);
  admin = { ...env, LILCLUSTER_TOKEN: d.token };
}, 60_000);

afterAll(async () => {
  await d?.stop();
});

describe('dispatcherctl read-only commands', () => {
  it('status: a summary, and the API JSON with --json', async () => {
    const r = await runCtl(['status'], env);
    expect(r.code).toBe(EXIT.OK);
    expect(r.stdout).toMatch(/^dispatcher\s+0\./m);
    expect(r.stdout).toMatch(/nodes\s+6 total: .*3 ready, 1 busy.*1 off.*4 connected; 1 waiting for `dispatcherctl approve`/);
    const j = await runCtl(['status', '--json'], env);
    const s = JSON.parse(j.stdout) as StatusView;
    expect(s.nodes).toMatchObject({ total: 6, connected: 4, pending: 1 });
    expect(s.enrollment).toBe('approve');
  });

  it('nodes: a table, names only with -q, a filter, and --json', async () => {
    const r = await runCtl(['nodes'], env);
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(
      /^NAME\s+STATE\s+MAC\s+IP\s+IMAGE\s+CPU\s+CORES\s+MEM\s+LOAD\s+TASKS\s+ALLOC CORES\s+ALLOC MEM\s+UPTIME\s+HEARTBEAT$/,
    );
    expect(lines).toHaveLength(7);
    expect(lines.find((l) => l.startsWith('node3 '))).toMatch(
      /busy\s+52:54:00:00:00:03\s+10\.42\.0\.3\s+img-1\s+QEMU Virtual CPU\s+4\s+300 MiB\/4\.0 GiB\s+0\.75\s+1\/4\s+-\s+-\s+1m/,
    );
    expect(lines.find((l) => l.startsWith('node5'))).toMatch(/^node5 \(pending\)\s+booting/);
    expect(lines.find((l) => l.startsWith('rack1'))).toMatch(/^rack1\s+off\s+52:54:00:00:01:00/);
    const q = await runCtl(['nodes', '-q'], env);
    expect(q.stdout).toBe('node1\nnode2\nnode3\nnode4\nnode5\nrack1\n');
    const f = await runCtl(['nodes', '--state', 'ready', '-q'], env);
    expect(f.stdout).toBe('node1\nnode2\nnode4\n');
    const l = await runCtl(['nodes', '--label', 'gpu', '-q'], env);
    expect(l.stdout).toBe('rack1\n');
    const w = await runCtl(['nodes', '--wide'], env);
    expect(w.stdout.split('\n')[0]).toMatch(/BOOTS\s+AGENT\s+UUID\s+LABELS\s+GPUS\s+LIMITS$/);
    const j = JSON.parse((await runCtl(['nodes', '--json'], env)).stdout) as NodeList;
    expect(j.nodes.map((n) => n.name)).toEqual(['node1', 'node2', 'node3', 'node4', 'node5', 'rack1']);
    expect(j.nodes[2]).toMatchObject({ state: 'busy', connected: true, cores: 4, tasks: [{ taskId: 42, progress: 0.5 }] });
    const bad = await runCtl(['nodes', '--state', 'sleeping'], env);
    expect(bad.code).toBe(EXIT.USAGE);
    expect(bad.stderr).toContain("argument 'sleeping' is invalid");
  });

  it('inspect: the snapshot as key: value lines, and --json', async () => {
    const r = await runCtl(['inspect', 'node1'], admin);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^node1 \(answered in [\d.]+ ms\)$/m);
    expect(r.stdout).toContain('cpu.model: QEMU Virtual CPU');
    expect(r.stdout).toContain('temperatures.main: 41');
    const j = JSON.parse((await runCtl(['inspect', testMac(1), '--json'], admin)).stdout) as {
      node: string;
      snapshot: { cpu: { cores: number } };
    };
    expect(j).toMatchObject({ node: 'node1', snapshot: { cpu: { cores: 4 } } });
  });

  it('names the unknown node in the error, with a hint, and exits 1', async () => {
    for (const args of [
      ['inspect', 'nodeX'],
      ['reboot', 'nodeX'],
      ['boot-log', 'nodeX'],
      ['approve', 'nodeX'],
    ]) {
      const r = await runCtl(args, admin);
      expect(r.code, args.join(' ')).toBe(EXIT.FAILED);
      expect(r.stderr).toContain('nodeX');
      expect(r.stderr).toMatch(/hint: /);
    }
    const j = await runCtl(['inspect', 'nodeX', '--json'], admin);
    expect(JSON.parse(j.stdout)).toEqual({
      error: { code: 'DSP_ERR_NODE_NOT_FOUND', message: 'no node named "nodeX"', hint: expect.stringContaining('dispatcherctl nodes') },
    });
  });

  it('a node that is off cannot be inspected: the error says so and what to do', async () => {
    const r = await runCtl(['inspect', 'rack1'], admin);
    expect(r.code).toBe(EXIT.FAILED);
    expect(r.stderr).toContain('rack1 is off: its agent is not connected');
    expect(r.stderr).toContain('dispatcherctl wake rack1');
  });

  it('events: recent events as lines, filters, and --json', async () => {
    const r = await runCtl(['events', '--node', 'node3'], env);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^\d\d:\d\d:\d\d\s+node3\s+node\.new\s+new machine 52:54:00:00:00:03 named node3/m);
    expect(
      r.stdout
        .split('\n')
        .filter(Boolean)
        .every((l) => /\snode3\s/.test(l)),
    ).toBe(true);
    const j = JSON.parse((await runCtl(['events', '--kind', 'node.state', '--limit', '3', '--json'], env)).stdout) as {
      events: { kind: string }[];
    };
    expect(j.events).toHaveLength(3);
    expect(j.events.every((e) => e.kind === 'node.state')).toBe(true);
  });

  it('events --follow prints new events as they happen and stops cleanly on Ctrl-C', async () => {
    const f = startCtl(['events', '--follow', '--limit', '0', '--node', 'node2'], env);
    await new Promise((r) => setTimeout(r, 500));
    d.core.events.append({ kind: 'test.marker', node: 'node2', message: 'node2 marker one' });
    d.core.events.append({ kind: 'test.marker', node: 'node1', message: 'node1 not for us' });
    await waitUntil('the followed event', () => f.out().includes('node2 marker one'));
    f.child.kill('SIGINT');
    const done = await f.done;
    expect(done.code).toBe(130);
    expect(done.stdout).not.toContain('not for us');
    // --json: one object a line.
    const g = startCtl(['events', '--follow', '--limit', '1', '--json'], env);
    await waitUntil('the first line', () => g.out().includes('\n'));
    d.core.events.append({ kind: 'test.marker', message: 'json marker' });
    await waitUntil('the json event', () => g.out().includes('json marker'));
    g.child.kill('SIGINT');
    await g.done;
    const lines = g
      .out()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { message: string });
    expect(lines.at(-1)!.message).toBe('json marker');
  });

  it('boot-log: the stages of each boot with times since its start', async () => {
    d.core.timeline.record(testMac(2), 'dhcp.discover', { arch: 0 });
    d.core.timeline.record(testMac(2), 'dhcp.ack', { ip: '10.42.0.2' });
    d.core.timeline.record(testMac(2), 'http.kernel', { bytes: 8_000_000, durationMs: 120 });
    d.core.timeline.record(testMac(2), 'agent.hello', {});
    const r = await runCtl(['boot-log', 'node2'], env);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^boot #1/m);
    expect(r.stdout).toMatch(/\+0\.000s\s+dhcp\.discover\s+arch=0/);
    expect(r.stdout).toMatch(/\+\d\.\d{3}s\s+http\.kernel\s+bytes=8000000 durationMs=120/);
    expect(r.stdout).toMatch(/agent\.hello/);
    const j = JSON.parse((await runCtl(['boot-log', 'node2', '--json'], env)).stdout) as { boots: { stages: unknown[] }[] };
    expect(j.boots[0]!.stages).toHaveLength(4);
    expect((await runCtl(['boot-log', 'node4'], env)).stdout).toContain('no boot recorded yet');
  });
});

describe('dispatcherctl actions', () => {
  it('refuses actions without a token, or with a wrong one, with exit 4 and a hint; nothing changes', async () => {
    const none = await runCtl(['drain', 'node1'], env);
    expect(none.code).toBe(EXIT.UNAUTHORIZED);
    expect(none.stderr).toContain('needs the admin token');
    expect(none.stderr).toContain('hint: no admin token (/nonexistent-lc-data-dir/admin.token: not found)');
    const wrong = await runCtl(['drain', 'node1', '--token', 'not-the-token'], env);
    expect(wrong.code).toBe(EXIT.UNAUTHORIZED);
    expect(wrong.stderr).toContain('wrong admin token');
    expect(wrong.stderr).toContain('the token from --token was refused');
    const rb = await runCtl(['reboot', 'node1'], { ...env, LILCLUSTER_TOKEN: 'nope-nope-nope' });
    expect(rb.code).toBe(EXIT.UNAUTHORIZED);
    expect(d.core.nodes.byName('node1')!.state).toBe('ready');
    expect(control.sent.filter((s) => s.cmd.kind === 'reboot')).toHaveLength(0);
  });

  it('reads the token from the data dir', async () => {
    const r = await runCtl(['drain', 'node1', '--data-dir', d.dataDir], env);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('node1: draining');
    const again = await runCtl(['drain', 'node1'], { ...env, LILCLUSTER_DATA_DIR: d.dataDir });
    expect(again.stdout).toContain('node1: already draining');
    const un = await runCtl(['undrain', 'node1', '--json'], admin);
    expect(un.code).toBe(0);
    expect(JSON.parse(un.stdout)).toEqual({
      results: [{ node: 'node1', action: 'undrain', state: 'ready', ackMs: null, message: 'takes tasks again' }],
      failures: [],
    });
    const twice = await runCtl(['undrain', 'node1'], admin);
    expect(twice.code).toBe(EXIT.FAILED);
    expect(twice.stderr).toContain('cannot undrain node1: it is ready');
  });

  it('reboot: acknowledged, recorded as an event, the node comes back under its name', async () => {
    const r = await runCtl(['reboot', 'node2'], admin);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^node2: reboot acknowledged in [\d.]+ ms, by firmware \(not kexec: its agent did not report its image/m);
    expect(control.sent.at(-1)).toMatchObject({ mac: testMac(2), cmd: { kind: 'reboot' } });
    await waitUntil('node2 back', () => control.isConnected(testMac(2)) && d.core.nodes.byName('node2')!.state === 'ready');
    const ev = await runCtl(['events', '--node', 'node2', '--kind', 'node', '--json'], env);
    const kinds = (JSON.parse(ev.stdout) as { events: { kind: string; message: string }[] }).events.map((e) => e.message);
    expect(kinds.some((m) => /node2 reboot acknowledged/.test(m))).toBe(true);
    expect(kinds.some((m) => /ready → rebooting: operator reboot/.test(m))).toBe(true);
    expect(kinds.some((m) => /rebooting → ready: agent hello/.test(m))).toBe(true);
  });

  it('reboot of several nodes reports each; one failure makes the exit code 1', async () => {
    const r = await runCtl(['reboot', 'node1', 'rack1', '--json'], admin);
    expect(r.code).toBe(EXIT.FAILED);
    const j = JSON.parse(r.stdout) as { results: { node: string }[]; failures: { node: string; error: { code: string } }[] };
    expect(j.results.map((x) => x.node)).toEqual(['node1']);
    expect(j.failures).toEqual([{ node: 'rack1', error: expect.objectContaining({ code: 'DSP_ERR_NODE_OFFLINE' }) }]);
    await waitUntil('node1 back', () => control.isConnected(testMac(1)) && d.core.nodes.byName('node1')!.state === 'ready');
  });

  it('reboot without nodes, or with nodes and --all, is a usage error', async () => {
    expect((await runCtl(['reboot'], admin)).code).toBe(EXIT.USAGE);
    expect((await runCtl(['reboot', 'node1', '--all'], admin)).code).toBe(EXIT.USAGE);
    expect((await runCtl(['reboot', 'node1', '--batch', '2'], admin)).code).toBe(EXIT.USAGE);
    expect((await runCtl(['reboot', '--all', '--rolling', '--batch', 'zero'], admin)).code).toBe(EXIT.USAGE);
  });

  it('approve admits a pending node; approving an admitted one is refused', async () => {
    const r = await runCtl(['approve', 'node5'], admin);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('node5: approved');
    expect(d.core.nodes.byName('node5')!.enrollment).toBe('admitted');
    const again = await runCtl(['approve', 'node5'], admin);
    expect(again.code).toBe(EXIT.FAILED);
    expect(again.stderr).toContain('node5 is already admitted');
  });

  it('set changes labels, UEFI first stage and fixed address; nothing to change is a usage error', async () => {
    const r = await runCtl(['set', 'node2', '--labels', 'gpu, big', '--first-stage', 'snponly.efi', '--ip', '10.42.0.42'], admin);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/labels:\s+gpu,big/);
    const n = d.core.nodes.byName('node2')!;
    expect(n).toMatchObject({ labels: ['gpu', 'big'], firstStage: 'snponly.efi', fixedIp: '10.42.0.42' });
    const j = await runCtl(['set', 'node2', '--first-stage', 'default', '--ip', 'none', '--json'], admin);
    expect(JSON.parse(j.stdout)).toMatchObject({ name: 'node2', firstStage: null, fixedIp: null, labels: ['gpu', 'big'] });
    const bad = await runCtl(['set', 'node2', '--ip', '10.42.0.300'], admin);
    expect(bad.code).toBe(EXIT.FAILED);
    expect(d.core.nodes.byName('node2')!.fixedIp).toBeNull();
    const nothing = await runCtl(['set', 'node2'], admin);
    expect(nothing.code).toBe(EXIT.USAGE);
    expect(nothing.stderr).toContain('nothing to change');
  });

  it('poweroff, then wake (Wake-on-LAN) only for a node that is off', async () => {
    const r = await runCtl(['poweroff', 'node4'], admin);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('node4: poweroff acknowledged');
    await waitUntil('node4 off', () => !control.isConnected(testMac(4)));
    expect(d.core.nodes.byName('node4')!.state).toBe('off'); // not lost: the operator turned it off
    const w = await runCtl(['wake', 'node4'], admin);
    expect(w.code).toBe(0);
    expect(w.stdout).toMatch(/node4: magic packet sent to 127\.0\.0\.255:9/);
    const awake = await runCtl(['wake', 'node3'], admin);
    expect(awake.code).toBe(EXIT.FAILED);
    expect(awake.stderr).toContain('cannot wake node3: it is busy');
  });

  it("exec streams stdout and stderr and exits with the command's exit code", async () => {
    const r = await runCtl(['exec', 'node3', '--', 'uname', '-a'], admin);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('ran uname -a\n');
    expect(r.stderr).toBe('a line on stderr\n');
    const f = await runCtl(['exec', 'node3', '--', 'fail'], admin);
    expect(f.code).toBe(3);
    const s = await runCtl(['exec', 'node3', '--', 'echo a | wc -c'], admin);
    expect(s.stdout).toBe('ran sh -c echo a | wc -c\n'); // one argument: a shell command line
    const j = await runCtl(['exec', 'node3', '--json', '--', 'true'], admin);
    const lines = j.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { type: string });
    expect(lines.map((l) => l.type)).toEqual(['started', 'output', 'output', 'exit']);
    const off = await runCtl(['exec', 'rack1', '--', 'true'], admin);
    expect(off.code).toBe(EXIT.FAILED);
    expect(off.stderr).toContain('rack1 is off');
    const noToken = await runCtl(['exec', 'node3', '--', 'true'], env);
    expect(noToken.code).toBe(EXIT.UNAUTHORIZED);
  });

  it('reboot --all --rolling drains, reboots and waits for each node, batch by batch', async () => {
    const before = control.sent.filter((s) => s.cmd.kind === 'reboot').length;
    // node3 runs a task: it is drained first and rebooted only once the task has finished.
    const taskEnds = setTimeout(() => (control.live.get(testMac(3))!.running = []), 1500);
    const t0 = Date.now();
    const r = await runCtl(['reboot', '--all', '--rolling', '--batch', '2'], admin, { timeoutMs: 60_000 });
    clearTimeout(taskEnds);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^rolling reboot #\d+: 3 nodes, 2 at a time$/m); // node4 is off, node5 never connected
    expect(r.stdout).toContain('node3: draining (1 running tasks)');
    const node3Reboot = control.sent.find((s, i) => i >= before && s.mac === testMac(3) && s.cmd.kind === 'reboot');
    expect(node3Reboot).toBeDefined();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1500);
    for (const n of ['node1', 'node2', 'node3']) {
      expect(r.stdout).toContain(`  ${n}: draining`);
      expect(r.stdout).toContain(`  ${n}: back`);
    }
    expect(r.stdout).toMatch(/rolling reboot #\d+ done in \S+: 3\/3 nodes back/);
    expect(control.sent.filter((s) => s.cmd.kind === 'reboot').length - before).toBe(3);
    // The drain hold is gone: every node takes tasks again.
    for (const n of [1, 2, 3]) expect(control.isDraining(testMac(n))).toBe(false);
    expect(d.core.nodes.byName('node3')!.state).toBe('ready');
    const j = JSON.parse((await runCtl(['reboot', '--all', '--rolling', '--json'], admin, { timeoutMs: 60_000 })).stdout) as OperationView;
    expect(j.state).toBe('done');
    expect(j.nodes.every((n) => n.phase === 'back')).toBe(true);
    // Both operations are listed; a finished one cannot be cancelled.
    const ops = await runCtl(['operations'], env);
    expect(ops.code).toBe(0);
    expect(ops.stdout).toMatch(new RegExp(`^#${j.id} rolling-reboot done \\(1 at a time\\): 3/3 nodes back$`, 'm'));
    expect(ops.stdout).toMatch(/^ {2}node3: back$/m);
    expect((JSON.parse((await runCtl(['operations', '--json'], env)).stdout) as { operations: unknown[] }).operations).toHaveLength(2);
    const cancel = await runCtl(['operations', '--cancel', String(j.id)], admin);
    expect(cancel.code).toBe(EXIT.FAILED);
    expect(cancel.stderr).toContain(`operation #${j.id} is already done`);
  });
});

describe('dispatcherctl help, completion and failures', () => {
  it('has --help on every command', async () => {
    const top = await runCtl(['--help'], env);
    expect(top.code).toBe(0);
    const section = top.stdout.slice(top.stdout.indexOf('Commands:'), top.stdout.indexOf('Exit codes:'));
    const commands = [...section.matchAll(/^ {2}([a-z-]+)/gm)].map((m) => m[1]!).filter((c) => c !== 'help');
    expect(commands).toEqual(
      expect.arrayContaining([
        'status',
        'nodes',
        'inspect',
        'set',
        'reboot',
        'poweroff',
        'wake',
        'drain',
        'undrain',
        'approve',
        'exec',
        'events',
        'boot-log',
        'completion',
      ]),
    );
    for (const c of commands) {
      const h = await runCtl([c, '--help'], env);
      expect(h.code, c).toBe(0);
      expect(h.stdout, c).toContain(`Usage: dispatcherctl ${c}`);
      expect(h.stdout, c).toContain('--json');
    }
  });

  it('says when the dispatcher cannot be reached (exit 3)', async () => {
    const r = await runCtl(['nodes'], { ...env, LILCLUSTER_URL: 'http://127.0.0.1:1' });
    expect(r.code).toBe(EXIT.UNREACHABLE);
    expect(r.stderr).toContain('cannot reach the dispatcher at http://127.0.0.1:1');
    expect(r.stderr).toContain('hint: is the dispatcher running?');
    const bad = await runCtl(['nodes', '--url', 'ftp://x'], env);
    expect(bad.code).toBe(EXIT.USAGE);
  });

  it('unknown commands and missing arguments are usage errors (exit 2)', async () => {
    expect((await runCtl(['frobnicate'], env)).code).toBe(EXIT.USAGE);
    expect((await runCtl(['inspect'], env)).code).toBe(EXIT.USAGE);
    expect((await runCtl(['completion', 'fish'], env)).code).toBe(EXIT.USAGE);
  });

  it('bash completion completes commands, options and node names', async () => {
    const script = (await runCtl(['completion', 'bash'], env)).stdout;
    const dir = (await import('node:fs')).mkdtempSync(join((await import('node:os')).tmpdir(), 'lc-op-compl-'));
    writeFileSync(
      join(dir, 'dispatcherctl'),
      `#!/bin/sh\nexec "${process.execPath}" "${join(process.cwd(), 'dist/bin/dispatcherctl.mjs')}" "$@"\n`,
      { mode: 0o755 },
    );
    // Async: the dispatcher answering `nodes -q` runs in this process.
    const complete = async (words: string[]) =>
      (
        await promisify(execFile)(
          'bash',
          [
            '-c',
            `${script}\nCOMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _dispatcherctl; printf '%s\\n' "\${COMPREPLY[@]}"`,
          ],
          {
            env: { ...env, PATH: `${dir}:${env.PATH}` },
            encoding: 'utf8',
          },
        )
      ).stdout
        .trim()
        .split('\n');
    expect(await complete(['dispatcherctl', 'reb'])).toEqual(['reboot']);
    expect(await complete(['dispatcherctl', 'un'])).toEqual(['undrain']);
    expect(await complete(['dispatcherctl', 'reboot', '--ro'])).toEqual(['--rolling']);
    expect(await complete(['dispatcherctl', 'inspect', 'node'])).toEqual(['node1', 'node2', 'node3', 'node4', 'node5']);
    expect(await complete(['dispatcherctl', 'nodes', '--state', 'dr'])).toEqual(['draining']);
    expect(await complete(['dispatcherctl', 'completion', ''])).toEqual(['bash', 'zsh']);
    const zsh = await runCtl(['completion', 'zsh'], env);
    expect(zsh.code).toBe(0);
    expect(zsh.stdout).toMatch(/^#compdef dispatcherctl/);
    expect(zsh.stdout).toContain("'reboot:reboot nodes through their agents");
  });
});
