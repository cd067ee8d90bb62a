/**
 * Serial-over-LAN capture, below the real BMC: the line splitter on hostile streams (fuzzed:
 * bounded state and lines, no control characters, the same lines however the stream is cut,
 * a store it feeds stays within its caps), and the session manager against a stand-in
 * ipmitool (a real process: a shell script) — back-off that doubles, one event per state
 * change, a payload already active deactivated once, a clean stop. The real ipmitool against
 * ipmi_sim and QEMU is test/integration/console/sol.test.ts.
 */
import { afterAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MAX_ESCAPE_CHARS, MAX_LINE_CHARS, SerialLineSplitter } from '../../../dispatcher/src/console/sol-lines.js';
import { SolCapture, type SolTarget } from '../../../dispatcher/src/console/sol.js';
import { ConsoleLog } from '../../../dispatcher/src/console/store.js';
import { openStore } from '../../../dispatcher/src/store/database.js';
import { GroupCommit } from '../../../dispatcher/src/store/group-commit.js';
import { allMigrations } from '../../../dispatcher/src/store/migrations.js';
import { EventLog } from '../../../dispatcher/src/events/event-log.js';
import { silentLogger } from '../../../dispatcher/src/log.js';
import { parseClusterFile } from '../../../dispatcher/src/nodes/cluster-file.js';
import type { Mac } from '../../../dispatcher/src/nodes/mac.js';
import { waitUntil } from '../../lab/run-ctl.js';

const dir = mkdtempSync(join(tmpdir(), 'lc-sol-unit-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const split = (chunks: (string | Uint8Array)[]) => {
  const s = new SerialLineSplitter();
  const out = chunks.flatMap((c) => s.push(typeof c === 'string' ? Buffer.from(c, 'latin1') : c));
  return [...out, ...s.end()];
};

describe('SerialLineSplitter', () => {
  it("turns SeaBIOS's serial screen into its text lines", () => {
    const screen = '\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2-debian-1.16.2-1)\r\n\r\nPress ESC for boot menu.\r\n\r\n';
    expect(split([screen])).toEqual(['SeaBIOS (version 1.16.2-debian-1.16.2-1)', 'Press ESC for boot menu.']);
  });

  it('ends a line where the screen is cleared or the cursor placed, as a terminal would show it', () => {
    expect(split(['Rebooting\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS\r\nmenu\x1b[5;10Hitem\x1b[1mbold\r\n'])).toEqual([
      'Rebooting',
      'SeaBIOS',
      'menu',
      'itembold',
    ]);
  });

  it('keeps escape sequences and UTF-8 characters whole across chunk boundaries', () => {
    const bytes = Buffer.from('a\x1b[1;31mred\x1b[0m é\x1b]0;title\x07 end\r\n', 'utf8');
    for (let cut = 1; cut < bytes.length; cut++) expect(split([bytes.subarray(0, cut), bytes.subarray(cut)])).toEqual(['ared é end']);
  });

  it('drops control characters, keeps tabs, ends lines at CR, LF and CRLF', () => {
    expect(split(['a\x07b\tc\x08\rd\ne\r\nf'])).toEqual(['ab\tc', 'd', 'e', 'f']);
  });

  it('cuts a line without end into bounded pieces, marked', () => {
    const lines = split(['x'.repeat(MAX_LINE_CHARS * 3 + 10)]);
    expect(lines).toHaveLength(4);
    expect(lines[0]).toBe(`${'x'.repeat(MAX_LINE_CHARS)}…`);
    expect(lines[3]).toBe('x'.repeat(10));
  });

  it('gives up an endless escape sequence and keeps the text after it', () => {
    // The first MAX_ESCAPE_CHARS + 1 characters go with the sequence, the rest is text again.
    const rest = 500 - (MAX_ESCAPE_CHARS + 1 - 2);
    expect(split([`\x1b[${'9'.repeat(500)}`, '\r\nafter\r\n'])).toEqual(['9'.repeat(rest), 'after']);
    expect(split([`\x1b]${'t'.repeat(500)}\nnext\n`])).toEqual(['t'.repeat(rest), 'next']);
  });

  /** Bytes a terminal stream is made of, weighted towards the ones that change the splitter's state. */
  const streamByte = fc.oneof(
    { weight: 4, arbitrary: fc.integer({ min: 0, max: 255 }) },
    { weight: 2, arbitrary: fc.constantFrom(0x1b, 0x5b, 0x5d, 0x07, 0x5c, 0x0d, 0x0a, 0x3b, 0x30, 0x6d, 0x50) },
    { weight: 1, arbitrary: fc.constantFrom(0xc3, 0xa9, 0xe2, 0x80, 0xa6, 0xf0, 0x9f) },
  );
  const stream = fc.array(streamByte, { maxLength: 6000 }).map((a) => Uint8Array.from(a));

  it('stays bounded and clean whatever the bytes, and gives the same lines however they are cut', () => {
    fc.assert(
      fc.property(stream, fc.array(fc.nat(), { maxLength: 20 }), (bytes, cuts) => {
        const whole = new SerialLineSplitter();
        const a = [...whole.push(bytes), ...whole.end()];
        const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((x, y) => x - y);
        const pieced = new SerialLineSplitter();
        const b: string[] = [];
        let from = 0;
        for (const p of [...points, bytes.length]) {
          b.push(...pieced.push(bytes.subarray(from, p)));
          expect(pieced.pending).toBeLessThanOrEqual(MAX_LINE_CHARS + MAX_ESCAPE_CHARS);
          from = p;
        }
        b.push(...pieced.end());
        expect(b).toEqual(a);
        for (const l of a) {
          expect(l.length).toBeGreaterThan(0);
          expect(l.length).toBeLessThanOrEqual(MAX_LINE_CHARS + 1);
          expect(l).not.toMatch(/[\u0000-\u0008\u000a-\u001f\u007f-\u009f]/);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('cannot grow the console store past its caps', () => {
    const store = new ConsoleLog(openStore({ dataDir: ':memory:', migrations: allMigrations }), { maxLines: 200, maxBytes: 20_000 });
    const mac = '52:54:00:00:00:0c' as Mac;
    fc.assert(
      fc.property(stream, (bytes) => {
        const s = new SerialLineSplitter();
        store.append(mac, 'serial', [...s.push(bytes), ...s.end()], 1);
        store.flush();
        const u = store.usage(mac);
        expect(u.lines).toBeLessThanOrEqual(200);
        expect(u.bytes).toBeLessThanOrEqual(20_000);
      }),
      { numRuns: 200 },
    );
    expect(store.usage(mac).lines).toBeGreaterThan(100);
  });
});

describe('cluster file: bmc sol', () => {
  const node = (bmc: string) => `nodes:\n  - name: node1\n    mac: 52:54:00:00:00:01\n    bmc: ${bmc}\n`;
  it('sol: false turns capture off for an IPMI BMC; anything else is refused, naming the field', () => {
    expect(parseClusterFile(node('{type: ipmi, address: a, user: u, passwordFile: /p, sol: false}')).nodes[0]!.bmc!.sol).toBe(false);
    expect(() => parseClusterFile(node('{type: ipmi, address: a, user: u, passwordFile: /p, sol: "off"}'))).toThrow(
      'nodes[0].bmc.sol: must be true or false',
    );
    expect(() => parseClusterFile(node('{type: redfish, address: a, user: u, passwordFile: /p, sol: true}'))).toThrow(
      'nodes[0].bmc.sol: only for ipmi',
    );
  });
});

/** A stand-in for ipmitool: does what the file `mode` says, and logs each call with its time. */
function fakeIpmitool(): { bin: string; mode: (m: string) => void; calls: () => { at: number; args: string }[] } {
  const d = mkdtempSync(join(dir, 'tool-'));
  const bin = join(d, 'ipmitool');
  writeFileSync(
    bin,
    `#!/bin/sh
echo "$(date +%s%3N) $*" >> ${d}/calls
case "$*" in *deactivate*) exit 0;; esac
case "$(cat ${d}/mode)" in
  auth) echo "Error: Unable to establish IPMI v2 / RMCP+ session: RAKP 2 HMAC is invalid" >&2; exit 1;;
  active) echo "Info: SOL payload already active on another session" >&2; exit 1;;
  nosol) echo "Invalid completion code received: Invalid command" >&2; echo "Error activating SOL payload: Invalid command" >&2; exit 1;;
  run) echo "[SOL Session operational.  Use ~? for help]"; printf '\\033[0mSeaBIOS (version test)\\r\\nBooting from ROM...\\r\\n'; exec cat > /dev/null;;
  flood) echo "[SOL Session operational.  Use ~? for help]"; seq 1 20000 | sed 's/^/line /'; echo last; exec cat > /dev/null;;
  short) echo "[SOL Session operational.  Use ~? for help]"; printf 'one line\\r\\n'; exit 0;;
esac
`,
  );
  chmodSync(bin, 0o755);
  const mode = (m: string) => writeFileSync(join(d, 'mode'), m);
  mode('auth');
  const calls = () =>
    existsSync(join(d, 'calls'))
      ? readFileSync(join(d, 'calls'), 'utf8')
          .trim()
          .split('\n')
          .map((l) => ({ at: Number(l.slice(0, l.indexOf(' '))), args: l.slice(l.indexOf(' ') + 1) }))
      : [];
  return { bin, mode, calls };
}

function setup(
  tool: ReturnType<typeof fakeIpmitool>,
  opts: { retryBaseMs?: number; retryMaxMs?: number; stableMs?: number; linesPerSecond?: number; burstLines?: number } = {},
) {
  const db = openStore({ dataDir: ':memory:', migrations: allMigrations });
  const events = new EventLog(db, new GroupCommit(db));
  const store = new ConsoleLog(db);
  const pw = join(dir, 'bmc.pw');
  writeFileSync(pw, 'Sekr1t\n', { mode: 0o600 });
  const mac = '52:54:00:00:00:01' as Mac;
  const target: SolTarget = { mac, name: 'node1', bmc: { type: 'ipmi', address: '127.0.0.1:1623', user: 'admin', passwordFile: pw } };
  const targets: SolTarget[] = [target];
  const capture = new SolCapture({
    targets: () => targets,
    nodeName: () => 'node1',
    store,
    events,
    log: silentLogger(),
    bin: tool.bin,
    retryBaseMs: opts.retryBaseMs ?? 100,
    retryMaxMs: opts.retryMaxMs ?? 800,
    stableMs: opts.stableMs ?? 60_000,
    ...(opts.linesPerSecond ? { linesPerSecond: opts.linesPerSecond } : {}),
    ...(opts.burstLines ? { burstLines: opts.burstLines } : {}),
  });
  const solEvents = () => events.list({ kind: 'node.console', limit: 100 });
  return { capture, store, events: solEvents, mac, targets, target };
}

/** What the store holds for a node once the queued lines are written. */
function stored(store: ConsoleLog, q: { mac: Mac; limit: number }) {
  store.flush();
  return store.list(q);
}

describe('SolCapture', () => {
  it('backs off a BMC that refuses: waits that double, one event for the whole run of failures', async () => {
    const tool = fakeIpmitool();
    const { capture, events } = setup(tool, { retryBaseMs: 100, retryMaxMs: 800 });
    capture.start();
    try {
      await waitUntil('six attempts', () => tool.calls().length >= 6, 10_000);
      const at = tool.calls().map((c) => c.at);
      const gaps = at.slice(1).map((t, i) => t - at[i]!);
      // 100, 200, 400, 800, 800 ms (plus process start-up), never sooner.
      [100, 200, 400, 800, 800].forEach((min, i) => expect(gaps[i]).toBeGreaterThanOrEqual(min - 5));
      const ev = events();
      expect(ev).toHaveLength(1);
      expect(ev[0]!.node).toBe('node1');
      expect(ev[0]!.message).toContain('ipmi BMC 127.0.0.1:1623');
      expect(ev[0]!.message).toContain('refused the credentials of user "admin"');
      expect(ev[0]!.data).toMatchObject({ source: 'serial', state: 'retrying' });
      expect(JSON.stringify(ev)).not.toContain('Sekr1t');
      expect(capture.sessions()).toEqual([expect.objectContaining({ node: 'node1', state: 'retrying' })]);
    } finally {
      await capture.stop();
    }
  });

  it('files the serial lines under the node, without ipmitool banners; stops cleanly and frees the payload', async () => {
    const tool = fakeIpmitool();
    tool.mode('run');
    const { capture, store, events, mac } = setup(tool);
    capture.start();
    await waitUntil('lines stored', () => stored(store, { mac, limit: 10 }).length === 2, 10_000);
    expect(store.list({ mac, limit: 10 }).map((l) => [l.source, l.text])).toEqual([
      ['serial', 'SeaBIOS (version test)'],
      ['serial', 'Booting from ROM...'],
    ]);
    expect(events().map((e) => e.data?.state)).toEqual(['capturing']);
    const argv = tool.calls()[0]!.args;
    expect(argv).toMatch(/-I lanplus .*-H 127\.0\.0\.1 -p 1623 -U admin -f \S+bmc\.pw sol activate$/);
    await capture.stop();
    expect(tool.calls().map((c) => c.args.split(' ').slice(-2).join(' '))).toEqual(['sol activate', 'sol deactivate']);
    expect(capture.sessions()).toEqual([]);
    expect(events()).toHaveLength(1); // a stop is not a failure
  });

  it('deactivates a payload already active once, then backs off if it stays taken', async () => {
    const tool = fakeIpmitool();
    tool.mode('active');
    const { capture, events } = setup(tool, { retryBaseMs: 100 });
    capture.start();
    try {
      await waitUntil('activate, deactivate, activate, back-off, activate', () => tool.calls().length >= 4, 10_000);
      expect(tool.calls().map((c) => c.args.split(' ').at(-1))).toEqual(['activate', 'deactivate', 'activate', 'activate']);
      expect(events().map((e) => e.message)).toEqual([expect.stringContaining('active in another session')]);
    } finally {
      await capture.stop();
    }
  });

  it('names a missing ipmitool, once, and backs off', async () => {
    const tool = fakeIpmitool();
    const { capture, events } = setup({ ...tool, bin: join(dir, 'no-such-ipmitool') });
    capture.start();
    try {
      await waitUntil('the refusal', () => events().length > 0, 10_000);
      expect(events()[0]!.message).toContain(`cannot run ${join(dir, 'no-such-ipmitool')}`);
      expect(events()[0]!.message).toContain('apt-get install ipmitool');
      await waitUntil('a second attempt', () => capture.sessions()[0]!.failures >= 2, 10_000);
      expect(events()).toHaveLength(1);
    } finally {
      await capture.stop();
    }
  });

  it('says so when the BMC has no Serial-over-LAN', async () => {
    const tool = fakeIpmitool();
    tool.mode('nosol');
    const { capture, events } = setup(tool);
    capture.start();
    try {
      await waitUntil('the refusal', () => events().length > 0, 10_000);
      expect(events()[0]!.message).toBe(
        'node1: serial console capture through the ipmi BMC 127.0.0.1:1623 stopped: the BMC offers no Serial-over-LAN, or has it disabled (sol: false in its bmc entry stops trying); trying again with back-off',
      );
    } finally {
      await capture.stop();
    }
  });

  it('one event per change: capturing, retrying, capturing again; a session that lasted resets the back-off', async () => {
    const tool = fakeIpmitool();
    tool.mode('short');
    const { capture, events } = setup(tool, { retryBaseMs: 300, retryMaxMs: 10_000, stableMs: 0 });
    capture.start();
    try {
      await waitUntil('five short sessions', () => tool.calls().length >= 5, 10_000);
      // Each session was "stable" (stableMs 0): every wait is the base, where failures in a row
      // would have waited 300, 600, 1200, then 2400 ms.
      const at = tool.calls().map((c) => c.at);
      const gaps = at.slice(1).map((t, i) => t - at[i]!);
      expect(gaps[3]!, JSON.stringify(gaps)).toBeGreaterThanOrEqual(295);
      expect(gaps[3]!, JSON.stringify(gaps)).toBeLessThan(2400);
      const states = events().map((e) => e.data?.state);
      expect(states.slice(0, 4)).toEqual(['capturing', 'retrying', 'capturing', 'retrying']);
      expect(states.length).toBeLessThanOrEqual(2 * tool.calls().length);
    } finally {
      await capture.stop();
    }
  });

  it('keeps a flood within the line budget, saying how many lines it dropped, not once per freed token', async () => {
    const tool = fakeIpmitool();
    tool.mode('flood');
    const { capture, store, mac } = setup(tool, { linesPerSecond: 50, burstLines: 100 });
    const t0 = Date.now();
    capture.start();
    try {
      await waitUntil('the flood read', () => capture.counters.floodDropped + capture.counters.lines >= 20_001, 20_000);
      await waitUntil('a marker', () => stored(store, { mac, limit: 1000 }).some((l) => l.text.startsWith('[lilcluster:')), 5_000);
      const lines = store.list({ mac, limit: 10_000 });
      const seconds = (Date.now() - t0) / 1000;
      expect(lines.length).toBeLessThanOrEqual(100 + 50 * seconds + 1);
      expect(lines.slice(0, 100).map((l) => l.text)).toEqual(Array.from({ length: 100 }, (_, i) => `line ${i + 1}`));
      const markers = lines.filter((l) => /^\[lilcluster: \d+ serial console lines dropped: over 50 lines\/s\]$/.test(l.text));
      expect(markers.length).toBeGreaterThan(0);
      expect(markers.length).toBeLessThanOrEqual(seconds + 2);
    } finally {
      await capture.stop();
    }
  });

  it('stops the session of a node whose BMC entry went (sol: false, forgotten)', async () => {
    const tool = fakeIpmitool();
    tool.mode('run');
    const { capture, targets, store, mac } = setup(tool);
    capture.start();
    await waitUntil('capturing', () => capture.sessions()[0]?.state === 'capturing', 10_000);
    targets.length = 0;
    capture.reconcile();
    expect(capture.sessions()).toEqual([]);
    await waitUntil('deactivated', () => tool.calls().some((c) => c.args.endsWith('deactivate')), 10_000);
    await capture.stop();
    store.flush();
    expect(store.list({ mac, limit: 10 })).toHaveLength(2);
  });
});
