/**
 * Forwarding a boot server's timeline (dispatcher/src/boot-server/forwarder.ts) on a real
 * in-memory timeline: only the stages a boot server's own services record leave; a new boot
 * is flagged; what the leader did not take is kept and sent again, in order.
 */
import { describe, expect, it } from 'vitest';
import { openStore } from '../../../dispatcher/src/store/database.js';
import { GroupCommit } from '../../../dispatcher/src/store/group-commit.js';
import { allMigrations } from '../../../dispatcher/src/store/migrations.js';
import { BootTimeline } from '../../../dispatcher/src/boot/timeline.js';
import { parseMac, type Mac } from '../../../dispatcher/src/nodes/mac.js';
import { BootEventForwarder } from '../../../dispatcher/src/boot-server/forwarder.js';
import type { BootEventBatch } from '../../../dispatcher/src/api/boot-servers/schemas.js';

const MAC = parseMac('52:54:00:b5:00:03') as Mac;

function timeline(): BootTimeline {
  const db = openStore({ dataDir: ':memory:', migrations: allMigrations });
  return new BootTimeline(db, new GroupCommit(db));
}

describe('BootEventForwarder', () => {
  it('sends its segment’s stages in order, a new boot flagged, and not the leader’s own', async () => {
    const t = timeline();
    const sent: BootEventBatch[] = [];
    const f = new BootEventForwarder(
      t,
      async (b) => void sent.push(b),
      () => undefined,
    );
    t.record(MAC, 'dhcp.discover', { arch: 0 });
    t.record(MAC, 'dhcp.ack', { ip: '10.76.0.100' });
    t.record(MAC, 'http.script', null); // the leader records scripts itself
    t.record(MAC, 'http.kernel', { bytes: 10 });
    await f.flush();
    const events = sent.flatMap((b) => b.events);
    expect(events.map((e) => [e.stage, e.newBoot])).toEqual([
      ['dhcp.discover', true],
      ['dhcp.ack', false],
      ['http.kernel', false],
    ]);
    expect(events[1]!.detail).toEqual({ ip: '10.76.0.100' });
    await f.stop();
  });

  it('keeps what the leader did not take and sends it again', async () => {
    const t = timeline();
    let up = false;
    const sent: string[] = [];
    const errors: string[] = [];
    const f = new BootEventForwarder(
      t,
      async (b) => {
        if (!up) throw new Error('connect ECONNREFUSED');
        sent.push(...b.events.map((e) => e.stage));
      },
      (err) => errors.push(err.message),
    );
    t.record(MAC, 'dhcp.discover', null);
    t.record(MAC, 'tftp.sent', null);
    await f.flush();
    expect(errors).toEqual(['connect ECONNREFUSED']);
    expect(f.queued).toBe(2);
    up = true;
    await f.flush();
    expect(sent).toEqual(['dhcp.discover', 'tftp.sent']);
    expect(f.queued).toBe(0);
    expect(f.dropped).toBe(0);
    await f.stop();
  });
});
