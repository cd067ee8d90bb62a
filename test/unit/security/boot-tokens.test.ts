/**
 * What a token admits, on a real SQLite store with a test clock: a boot token once and for
 * minutes; the session credential of a boot, rotated at each welcome and ended by a new boot;
 * enrollment tokens for one MAC until they expire; the hello decisions built on them; the
 * auto-enrolment caps.
 */
import { describe, expect, it } from 'vitest';
import { openStore } from '../../../dispatcher/src/store/database.js';
import { allMigrations } from '../../../dispatcher/src/store/migrations.js';
import { GroupCommit } from '../../../dispatcher/src/store/group-commit.js';
import { EventLog } from '../../../dispatcher/src/events/event-log.js';
import { NodeRegistry } from '../../../dispatcher/src/nodes/registry.js';
import { BootTokens } from '../../../dispatcher/src/trust/boot-tokens.js';
import { EnrollTokens } from '../../../dispatcher/src/trust/enroll-tokens.js';
import { BootAddresses, bootOriginRefusal, NodeNetworkGate } from '../../../dispatcher/src/trust/boot-origin.js';
import { decideAdmission, type AdmissionChecks } from '../../../dispatcher/src/agents/admission.js';
import { PROTOCOL_VERSION, type HelloMessage } from '../../../dispatcher/src/protocol/messages.js';
import { parseClusterFile } from '../../../dispatcher/src/nodes/cluster-file.js';
import { parseMac, type Mac } from '../../../dispatcher/src/nodes/mac.js';

const mac = (s: string) => parseMac(s) as Mac;
const A = mac('52:54:00:00:0a:01');
const B = mac('52:54:00:00:0a:02');

function store() {
  let t = 1_000_000;
  const clock = { now: () => t, advance: (ms: number) => (t += ms) };
  const db = openStore({ dataDir: ':memory:', migrations: allMigrations });
  return { db, clock };
}

describe('boot tokens', () => {
  it('admit one hello of their MAC, within their lifetime', () => {
    const { db, clock } = store();
    const tokens = new BootTokens(db, clock.now, 10 * 60_000);
    const t = tokens.issue(A);
    expect(tokens.check(B, t)).toBe('unknown');
    expect(tokens.spend(A, t)).toBe('ok');
    expect(tokens.spend(A, t)).toBe('used');
    const late = tokens.issue(A);
    clock.advance(10 * 60_000 + 1);
    expect(tokens.check(A, late)).toBe('expired');
    expect(tokens.spend(A, late)).toBe('expired');
  });

  it('are replaced by the next boot, which also ends the session credentials of the MAC', () => {
    const { db, clock } = store();
    const tokens = new BootTokens(db, clock.now);
    const first = tokens.issue(A);
    tokens.spend(A, first);
    tokens.grantSession(A, 'cred-1');
    tokens.confirmSession(A);
    expect(tokens.checkSession(A, 'cred-1')).toBe(true);
    const second = tokens.issue(A);
    expect(tokens.check(A, first)).toBe('unknown');
    expect(tokens.checkSession(A, 'cred-1')).toBe(false);
    expect(tokens.check(A, second)).toBe('ok');
  });

  it("a pending node's token restarts its clock while the agent keeps asking", () => {
    const { db, clock } = store();
    const tokens = new BootTokens(db, clock.now, 60_000);
    const t = tokens.issue(A);
    clock.advance(50_000);
    tokens.renew(A, t);
    clock.advance(50_000);
    expect(tokens.check(A, t)).toBe('ok');
  });
});

describe('session credentials', () => {
  it('rotate: the presented one stays good until the agent proves it holds the next, then is spent', () => {
    const { db, clock } = store();
    const tokens = new BootTokens(db, clock.now);
    tokens.issue(A);
    tokens.grantSession(A, 'c1');
    expect(tokens.checkSession(A, 'c1')).toBe(true); // the welcome may have been lost: c1 is the next, still unconfirmed
    tokens.grantSession(A, 'c2'); // its welcome derives c2
    expect(tokens.checkSession(A, 'c1')).toBe(true); // c2 not confirmed yet
    tokens.confirmSession(A); // first sealed message of the c2 session
    expect(tokens.checkSession(A, 'c1')).toBe(false);
    expect(tokens.checkSession(A, 'c2')).toBe(true);
    expect(tokens.checkSession(B, 'c2')).toBe(false);
  });
});

describe('enrollment tokens', () => {
  it('admit the MAC they name, or bind to the first that uses them, until they expire', () => {
    const { db, clock } = store();
    const e = new EnrollTokens(db, clock.now);
    const forA = e.create({ mac: A, ttlMs: 60_000 });
    expect(e.check(B, forA.token)).toEqual({ ok: false, why: 'other-mac' });
    expect(e.use(A, forA.token)).toMatchObject({ ok: true });
    const open = e.create({ ttlMs: 60_000 });
    expect(e.use(B, open.token)).toMatchObject({ ok: true });
    expect(e.check(A, open.token)).toEqual({ ok: false, why: 'other-mac' });
    clock.advance(60_001);
    expect(e.check(A, forA.token)).toEqual({ ok: false, why: 'expired' });
    expect(e.check(A, 'lce_nope')).toEqual({ ok: false, why: 'unknown' });
    expect(e.list().map((x) => x.mac)).toEqual([A, B]);
    expect(JSON.stringify(e.list())).not.toContain(forA.token);
    expect(e.revoke(forA.info.id)).toBe(true);
  });
});

describe('hello admission', () => {
  const hello = (kind: 'boot' | 'session' | 'enroll', token = 't'): HelloMessage =>
    ({ type: 'hello', protocol: PROTOCOL_VERSION, mac: A, auth: { kind, token } }) as unknown as HelloMessage;
  const node = { mac: A, name: 'node1' } as never;
  const checks = (over: Partial<AdmissionChecks> = {}): AdmissionChecks => ({
    bootToken: () => 'ok',
    session: () => true,
    enrollToken: () => ({ ok: true, id: 'x' }),
    enrollBlocked: () => undefined,
    admit: () => ({ kind: 'boot', node }),
    ...over,
  });
  it.each([
    ['a used boot token', hello('boot'), { bootToken: () => 'used' as const }, 'bad-token', /already used/],
    ['an expired boot token', hello('boot'), { bootToken: () => 'expired' as const }, 'bad-token', /expired/],
    ['an unknown session credential', hello('session'), { session: () => false }, 'bad-token', /session credential/],
    ['an enrollment token for a PXE-booted MAC', hello('enroll'), { enrollBlocked: () => 'it booted by PXE' }, 'denied', /cannot claim/],
    [
      'an enrollment token for another MAC',
      hello('enroll'),
      { enrollToken: () => ({ ok: false as const, why: 'other-mac' as const }) },
      'bad-token',
      /another MAC/,
    ],
  ])('refuses %s', (_name, h, over, reason, message) => {
    expect(decideAdmission(h, A, checks(over as Partial<AdmissionChecks>))).toMatchObject({
      kind: 'refused',
      reason,
      message: expect.stringMatching(message),
    });
  });
  it('does not let an enrollment token pass the auto-enrolment cap check silently: it is exempt, strangers are not', () => {
    let seen: boolean | undefined;
    decideAdmission(
      hello('enroll'),
      A,
      checks({
        admit: (_m, o) => {
          seen = o.enrolled;
          return { kind: 'boot', node };
        },
      }),
    );
    expect(seen).toBe(true);
    decideAdmission(
      hello('boot'),
      A,
      checks({
        admit: (_m, o) => {
          seen = o.enrolled;
          return { kind: 'boot', node };
        },
      }),
    );
    expect(seen).toBe(false);
  });
});

describe('auto-enrolment caps', () => {
  it('register new machines up to the per-minute and total caps; forget frees room', async () => {
    const { db, clock } = store();
    const commits = new GroupCommit(db);
    const nodes = new NodeRegistry(
      db,
      commits,
      new EventLog(db, commits, clock.now),
      parseClusterFile('autoEnroll: { perMinute: 3, total: 5 }\n'),
      clock.now,
    );
    const m = (i: number) => mac(`02:00:00:00:00:${i.toString(16).padStart(2, '0')}`);
    const kinds = Array.from({ length: 5 }, (_, i) => nodes.admit(m(i)).kind);
    expect(kinds).toEqual(['boot', 'boot', 'boot', 'deny', 'deny']);
    expect(nodes.admit(m(4))).toMatchObject({ capped: true, reason: expect.stringMatching(/perMinute 3/) });
    clock.advance(60_001);
    expect([nodes.admit(m(5)).kind, nodes.admit(m(6)).kind, nodes.admit(m(7)).kind]).toEqual(['boot', 'boot', 'deny']);
    expect(nodes.admit(m(7))).toMatchObject({ reason: expect.stringMatching(/total 5/) });
    expect(nodes.admit(m(0)).kind).toBe('boot'); // known machines are not new
    expect(nodes.admit(m(8), { enrolled: true }).kind).toBe('boot'); // an enrollment token is not a stranger
    await nodes.forget(m(0));
    clock.advance(60_001);
    expect(nodes.admit(m(9)).kind).toBe('deny'); // 5 strangers + 1 enrolled still ≥ 5
    await nodes.forget(m(8));
    await nodes.forget(m(1));
    expect(nodes.admit(m(9)).kind).toBe('boot');
    commits.close();
  });
});

describe('boot origin', () => {
  const gate = new NodeNetworkGate({ name: undefined, address: '10.42.0.1' });
  const seen = new BootAddresses();
  seen.remember(A, { kind: 'ip', ip: '10.42.0.100' });
  it.each([
    ['another address of the host', '192.168.1.5', '10.42.0.100', 'full', 404],
    ['loopback', '127.0.0.1', '10.42.0.100', 'full', 404],
    ['the node network, another source', '10.42.0.1', '10.42.0.101', 'full', 403],
    ['the node network, the DHCP source', '10.42.0.1', '10.42.0.100', 'full', undefined],
    ['the node network, DHCP off', '10.42.0.1', '10.42.0.250', 'off', undefined],
  ] as const)('%s', (_n, local, peer, mode, status) => {
    expect(bootOriginRefusal({ localAddress: local, peer, mac: A }, gate, { mode, seen: seen.of(A) })?.status).toBe(status);
  });
  it("a relayed client: any address in the relay's subnet", () => {
    const s = new BootAddresses();
    s.remember(B, { kind: 'subnet', subnet: { network: 0x0a2b0000, mask: 0xffffff00 }, relay: '10.43.0.1' });
    expect(
      bootOriginRefusal({ localAddress: '10.42.0.1', peer: '10.43.0.77', mac: B }, gate, { mode: 'full', seen: s.of(B) }),
    ).toBeUndefined();
    expect(
      bootOriginRefusal({ localAddress: '10.42.0.1', peer: '10.44.0.77', mac: B }, gate, { mode: 'full', seen: s.of(B) })?.status,
    ).toBe(403);
  });
  it('a loopback node network (tests, --dhcp off on one host) takes local requests', () => {
    expect(new NodeNetworkGate({ name: undefined, address: '127.0.0.1' }).admits('::ffff:127.0.0.1')).toBe(true);
  });
});
