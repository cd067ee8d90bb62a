import { describe, expect, it } from 'vitest';
import { openStore } from '../../../dispatcher/src/store/database.js';
import { GroupCommit } from '../../../dispatcher/src/store/group-commit.js';
import { allMigrations } from '../../../dispatcher/src/store/migrations.js';
import { BootTimeline, type BootStage } from '../../../dispatcher/src/boot/timeline.js';
import { recordStage, startsNewBoot } from '../../../dispatcher/src/boot/record-stage.js';
import { groupBoots } from '../../../dispatcher/src/api/boots/routes.js';
import { silentLogger } from '../../../dispatcher/src/log.js';
import { parseMac, type Mac } from '../../../dispatcher/src/nodes/mac.js';

const mac = parseMac('52:54:00:00:00:01') as Mac;

describe('when a stage starts a new boot', () => {
  it.each<[BootStage, BootStage | undefined, boolean]>([
    ['tftp.sent', undefined, false],
    ['tftp.sent', 'dhcp.ack', false],
    ['tftp.sent', 'tftp.sent', false],
    ['tftp.sent', 'http.initrd', true],
    ['tftp.sent', 'agent.hello', true],
    ['http.script', 'dhcp.ack', false],
    ['http.script', 'tftp.sent', false],
    ['http.script', 'http.script', false],
    ['http.script', 'agent.hello', true],
    ['http.script', 'http.kernel', true],
    ['http.kernel', 'agent.hello', false],
  ])('%s after %s → %s', (stage, latest, want) => {
    expect(startsNewBoot(stage, latest)).toBe(want);
  });
});

describe('boot timeline view', () => {
  it('groups stages by boot with times since the boot began', () => {
    let t = 1_000_000;
    const db = openStore({ dataDir: ':memory:', migrations: allMigrations });
    const timeline = new BootTimeline(db, new GroupCommit(db), () => t);
    const log = silentLogger();
    const step = (stage: BootStage, ms: number) => {
      t += ms;
      return recordStage(timeline, log, mac, stage, { n: t });
    };
    step('tftp.sent', 0);
    step('http.script', 500);
    step('http.kernel', 100);
    step('http.failed', 100);
    step('agent.hello', 1000);
    step('http.script', 60_000); // reboot without DHCP in sight: a new boot
    step('http.kernel', 50);
    const boots = groupBoots(timeline.list(mac, 5));
    expect(boots.map((b) => b.boot)).toEqual([1, 2]);
    expect(boots[0]).toMatchObject({ lastStage: 'agent.hello', durationMs: 1700, reachedAgent: true, failures: 1 });
    expect(boots[0]!.stages.map((s) => [s.stage, s.sinceStartMs])).toEqual([
      ['tftp.sent', 0],
      ['http.script', 500],
      ['http.kernel', 600],
      ['http.failed', 700],
      ['agent.hello', 1700],
    ]);
    expect(boots[1]).toMatchObject({ lastStage: 'http.kernel', reachedAgent: false, failures: 0, durationMs: 50 });
    expect(boots[1]!.stages[0]!.at).toBe(new Date(boots[1]!.stages[0]!.ts).toISOString());
    expect(groupBoots(timeline.list(mac, 1)).map((b) => b.boot)).toEqual([2]);
  });

  it('never throws when the store is gone', () => {
    const db = openStore({ dataDir: ':memory:', migrations: allMigrations });
    const timeline = new BootTimeline(db, new GroupCommit(db));
    db.close();
    expect(recordStage(timeline, silentLogger(), mac, 'tftp.sent', {})).toBeUndefined();
  });
});
