import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  LineBudget,
  MAX_DATAGRAM_BYTES,
  MAX_LINE_CHARS,
  MAX_LINES_PER_DATAGRAM,
  parseDatagram,
} from '../../../dispatcher/src/console/lines.js';
import { ConsoleLog, consoleMigrations } from '../../../dispatcher/src/console/store.js';
import { openStore } from '../../../dispatcher/src/store/database.js';
import type { Mac } from '../../../dispatcher/src/nodes/mac.js';

const A = '52:54:00:00:00:0a' as Mac;
const B = '52:54:00:00:00:0b' as Mac;
const memoryLog = (limits: { maxLines: number; maxBytes: number }) =>
  new ConsoleLog(openStore({ dataDir: ':memory:', migrations: consoleMigrations }), limits);

describe('parseDatagram', () => {
  it('splits a netconsole datagram into its printable lines', () => {
    const d = Buffer.from('[   12.345678] sysrq: Trigger a crash\n[   12.345700] Kernel panic - not syncing: sysrq triggered crash\n');
    expect(parseDatagram(d)).toEqual({
      lines: ['[   12.345678] sysrq: Trigger a crash', '[   12.345700] Kernel panic - not syncing: sysrq triggered crash'],
      truncated: false,
    });
  });

  it('drops control characters and empty lines, keeps tabs, replaces invalid UTF-8', () => {
    const d = Buffer.concat([Buffer.from('a\x1b[31mred\x07\tx\r\n\n\n'), Buffer.from([0xff, 0xfe, 0x41, 0x0a])]);
    expect(parseDatagram(d).lines).toEqual(['a[31mred\tx', '\ufffd\ufffdA']);
  });

  it('cuts an oversized datagram, a long line and too many lines, and says so', () => {
    const big = parseDatagram(Buffer.alloc(64 * 1024, 0x41));
    expect(big.truncated).toBe(true);
    expect(big.lines).toHaveLength(1);
    expect(big.lines[0]!.length).toBeLessThanOrEqual(MAX_LINE_CHARS + 1);
    const many = parseDatagram(Buffer.from('x\n'.repeat(100)));
    expect(many.truncated).toBe(true);
    expect(many.lines).toHaveLength(MAX_LINES_PER_DATAGRAM);
  });

  it('never throws and stays within its bounds, whatever the bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 4 * MAX_DATAGRAM_BYTES }), (bytes) => {
        const { lines } = parseDatagram(bytes);
        expect(lines.length).toBeLessThanOrEqual(MAX_LINES_PER_DATAGRAM);
        for (const l of lines) {
          expect(l.length).toBeGreaterThan(0);
          expect(l.length).toBeLessThanOrEqual(MAX_LINE_CHARS + 1);
          expect(l).not.toMatch(/[\u0000-\u0008\u000a-\u001f\u007f]/);
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe('LineBudget', () => {
  it('grants a burst, then the rate, never more', () => {
    const b = new LineBudget(100, 500, 0);
    expect(b.take(800, 0)).toBe(500);
    expect(b.take(10, 0)).toBe(0);
    expect(b.take(1000, 1000)).toBe(100);
    expect(b.take(1000, 100_000)).toBe(500);
    // A clock going back gives nothing.
    expect(b.take(10, 50_000)).toBe(0);
  });
});

describe('ConsoleLog', () => {
  it('keeps lines per node, in order, and lists the last ones after an id', () => {
    const log = memoryLog({ maxLines: 100, maxBytes: 100_000 });
    log.append(A, 'kernel', ['a1', 'a2'], 1);
    log.append(B, 'kernel', ['b1'], 2);
    log.append(A, 'serial', ['a3'], 3);
    log.flush();
    expect(log.list({ mac: A, limit: 10 }).map((l) => l.text)).toEqual(['a1', 'a2', 'a3']);
    expect(log.list({ mac: A, source: 'kernel', limit: 10 }).map((l) => l.text)).toEqual(['a1', 'a2']);
    expect(log.list({ mac: A, limit: 2 }).map((l) => l.text)).toEqual(['a2', 'a3']);
    const first = log.list({ mac: A, limit: 1 })[0]!.id;
    expect(log.list({ mac: A, afterId: first - 1, limit: 10 }).map((l) => l.text)).toEqual(['a3']);
    expect(log.usage(B)).toEqual({ lines: 1, bytes: 2 });
  });

  it('never stores the boot token the kernel prints with its command line, from any source', () => {
    const log = memoryLog({ maxLines: 100, maxBytes: 100_000 });
    const cmdline =
      'Kernel command line: initrd=initrd.img lc.dispatcher=http://10.0.0.1:8080 lc.token=Zq3-secret_9 lc.image=default@abc console=ttyS0';
    log.append(A, 'kernel', [cmdline, 'x lc.token= y', 'lc.token=a lc.token=b'], 1);
    log.append(A, 'serial', [`[    0.000000] ${cmdline}`], 2);
    log.flush();
    const texts = log.list({ mac: A, limit: 10 }).map((l) => l.text);
    expect(texts.join('\n')).not.toMatch(/Zq3-secret_9|lc\.token=[ab]\b/);
    expect(texts[0]).toBe(
      'Kernel command line: initrd=initrd.img lc.dispatcher=http://10.0.0.1:8080 lc.token=(hidden) lc.image=default@abc console=ttyS0',
    );
    expect(texts[1]).toBe('x lc.token=(hidden) y');
    expect(texts[2]).toBe('lc.token=(hidden) lc.token=(hidden)');
    expect(texts[3]).toContain('lc.token=(hidden) lc.image=');
  });

  it('tells subscribers each stored batch with its ids', async () => {
    const log = memoryLog({ maxLines: 100, maxBytes: 100_000 });
    const seen: string[] = [];
    log.subscribe((batch) => seen.push(...batch.map((l) => `${l.id}:${l.text}`)));
    log.append(A, 'kernel', ['x', 'y'], 1);
    await new Promise((r) => setImmediate(r));
    expect(seen).toEqual(['1:x', '2:y']);
  });

  it('drops the oldest lines past its caps, in lines and in bytes', () => {
    const log = memoryLog({ maxLines: 50, maxBytes: 1000 });
    for (let i = 0; i < 200; i++) log.append(A, 'kernel', [`line ${i}`], i);
    log.flush();
    const kept = log.list({ mac: A, limit: 1000 });
    expect(kept.length).toBeLessThanOrEqual(50);
    expect(kept.at(-1)!.text).toBe('line 199');
    log.append(
      B,
      'kernel',
      Array.from({ length: 30 }, () => 'x'.repeat(100)),
      0,
    );
    log.flush();
    expect(log.usage(B).bytes).toBeLessThanOrEqual(1000);
    expect(log.list({ mac: B, limit: 1000 }).length).toBe(log.usage(B).lines);
    // A's lines are untouched by B's trimming.
    expect(log.list({ mac: A, limit: 1000 })).toEqual(kept);
  });

  it('never holds more than its caps per node, whatever is appended', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ node: fc.constantFrom(A, B), lines: fc.array(fc.string({ maxLength: 300 }), { maxLength: 40 }) }), {
          maxLength: 60,
        }),
        fc.integer({ min: 1, max: 50 }),
        fc.integer({ min: 300, max: 5000 }),
        (appends, maxLines, maxBytes) => {
          const log = memoryLog({ maxLines, maxBytes });
          for (const a of appends) {
            log.append(
              a.node,
              'kernel',
              a.lines.filter((l) => l.length > 0),
              0,
            );
            if (Math.random() < 0.5) log.flush();
          }
          log.flush();
          for (const mac of [A, B]) {
            const rows = log.list({ mac, limit: 100_000 });
            const bytes = rows.reduce((s, r) => s + Buffer.byteLength(r.text), 0);
            expect(rows.length).toBeLessThanOrEqual(maxLines);
            // One line may be larger than the cap by itself: then it alone is kept, never more.
            if (rows.length > 1) expect(bytes).toBeLessThanOrEqual(maxBytes);
            expect(log.usage(mac)).toEqual({ lines: rows.length, bytes });
          }
        },
      ),
      { numRuns: 150 },
    );
  });

  it('keeps its lines across a restart (reopened store)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lc-console-'));
    const db = openStore({ dataDir: dir, migrations: consoleMigrations });
    const log = new ConsoleLog(db, { maxLines: 10, maxBytes: 1000 });
    log.append(A, 'kernel', ['Kernel panic - not syncing'], 5);
    log.close();
    db.close();
    const again = new ConsoleLog(openStore({ dataDir: dir, migrations: consoleMigrations }), { maxLines: 10, maxBytes: 1000 });
    expect(again.list({ mac: A, limit: 10 }).map((l) => l.text)).toEqual(['Kernel panic - not syncing']);
    expect(again.usage(A)).toEqual({ lines: 1, bytes: 26 });
  });
});
