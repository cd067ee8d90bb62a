/**
 * BMC power end to end: the real dispatcher (dist/), the real dispatcherctl, real ipmitool
 * against OpenIPMI's ipmi_sim driving a real QEMU machine, and a Redfish service (test/lab/
 * redfish.ts) driving another by QMP over HTTPS with certificates made here. Power on, off,
 * cycle and `reboot --hard` change the machines' real state (their QEMU processes); wrong
 * credentials, a BMC that does not answer and a certificate that does not verify are clear
 * errors naming node and BMC, backed off, with the other nodes unaffected; the passwords
 * appear in no answer, no CLI output and no log line.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSocket, type Socket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDispatcher, type DispatcherProcess } from '../../lab/dispatcher.js';
import { baseEnv, runCtl, waitUntil, type CtlRun } from '../../lab/run-ctl.js';
import { IpmiBmc } from '../../lab/bmc.js';
import { freePort } from '../../lab/ports.js';
import { RedfishBmc, makeTestCa } from '../../lab/redfish.js';
import type { ClusterEvent } from '../../../dispatcher/src/api/schemas.js';

const dir = mkdtempSync(join(tmpdir(), 'lc-power-'));
// IPMI 2.0 passwords are at most 20 bytes (ipmi_sim keeps 16).
const PASSWORD = `ip${randomBytes(7).toString('hex')}`;
const RF_PASSWORD = `rf-${randomBytes(8).toString('hex')}`;
const WRONG = `wrong-${randomBytes(8).toString('hex')}`;
const SECRETS = [PASSWORD, RF_PASSWORD, WRONG];

let d: DispatcherProcess;
let admin: Record<string, string>;
let ipmi: IpmiBmc;
let silent: Socket;
let rf: RedfishBmc;
let rfOtherCa: RedfishBmc;
let rfLoose: RedfishBmc;
/** Everything dispatcherctl said, for the credentials check. */
const said: string[] = [];

async function ctl(...args: string[]): Promise<CtlRun> {
  const r = await runCtl(args, admin, { timeoutMs: 40_000 });
  said.push(r.stdout, r.stderr);
  return r;
}

function secretFile(name: string, content: string): string {
  const f = join(dir, name);
  writeFileSync(f, `${content}\n`, { mode: 0o600 });
  return f;
}

beforeAll(async () => {
  ipmi = await IpmiBmc.start({ name: 'node1', lanPort: await freePort('udp'), vmPort: await freePort('tcp'), password: PASSWORD });
  // A BMC that never answers: a bound UDP port that swallows every packet.
  silent = createSocket('udp4');
  await new Promise<void>((r) => silent.bind(0, '127.0.0.1', r));
  const ca = makeTestCa(mkdtempSync(join(dir, 'ca1-')));
  const otherCa = makeTestCa(mkdtempSync(join(dir, 'ca2-')), 'some other CA');
  rf = await RedfishBmc.start({ name: 'node5', user: 'root', password: RF_PASSWORD, tls: ca.server });
  rfOtherCa = await RedfishBmc.start({ name: 'node6', user: 'root', password: RF_PASSWORD, tls: ca.server });
  rfLoose = await RedfishBmc.start({ name: 'node7', user: 'root', password: RF_PASSWORD, tls: otherCa.server, host: '127.0.0.7' });
  const good = secretFile('ipmi.pw', PASSWORD);
  const rfPw = secretFile('rf.pw', RF_PASSWORD);
  const wrong = secretFile('wrong.pw', WRONG);
  const bmc = (b: string) => `    bmc: {${b}}\n`;
  const n = (i: number, extra = '') => `  - name: node${i}\n    mac: 52:54:00:00:14:0${i}\n${extra}`;
  const cluster =
    'nodes:\n' +
    n(1, `    labels: [lab]\n${bmc(`type: ipmi, address: "127.0.0.1:${ipmi.opts.lanPort}", user: admin, passwordFile: ${good}`)}`) +
    n(2, bmc(`type: ipmi, address: "127.0.0.1:${silent.address().port}", user: admin, passwordFile: ${good}`)) +
    n(3, bmc(`type: ipmi, address: "127.0.0.1:${ipmi.opts.lanPort}", user: admin, passwordFile: ${wrong}`)) +
    n(4, '    labels: [lab]\n') +
    n(5, bmc(`type: redfish, address: "127.0.0.1:${rf.port}", user: root, passwordFile: ${rfPw}, ca: ${ca.caFile}`)) +
    n(6, bmc(`type: redfish, address: "127.0.0.1:${rfOtherCa.port}", user: root, passwordFile: ${rfPw}, ca: ${otherCa.caFile}`)) +
    n(7, '    labels: [rack7]\n') +
    // A label group: {n} is the number ending the node's name (node7 → 127.0.0.7); its cert is not checked.
    `bmcs:\n  - {labels: [rack7], type: redfish, address: "127.0.0.{n}:${rfLoose.port}", user: root, passwordFile: ${wrong}, verify: false}\n`;
  d = await startDispatcher({ cluster, logLevel: 'debug' });
  admin = { ...baseEnv(d.url), LILCLUSTER_TOKEN: d.token };
}, 60_000);

afterAll(async () => {
  await d?.stop();
  await ipmi?.stop();
  silent?.close();
  await Promise.all([rf?.stop(), rfOtherCa?.stop(), rfLoose?.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

describe('IPMI (ipmitool → ipmi_sim → QEMU)', () => {
  it('power status, on, cycle, reset, off change the machine for real', async () => {
    const bmcName = `ipmi BMC 127.0.0.1:${ipmi.opts.lanPort}`;
    let r = await ctl('power', 'status', 'node1');
    expect(r.stdout, r.stderr).toBe(`node1: off (${bmcName})\n`);
    expect(ipmi.qemuPid()).toBeNull();

    r = await ctl('power', 'on', 'node1');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`node1: power on done through the ${bmcName}\n`);
    const first = await ipmi.waitPower('on');
    expect((await ctl('power', 'status', 'node1')).stdout).toBe(`node1: on (${bmcName})\n`);

    expect((await ctl('power', 'cycle', 'node1')).code).toBe(0);
    expect((await d.api<{ state: string }>('GET', '/api/v1/nodes/node1')).state).toBe('rebooting');
    const second = await waitUntil('a new QEMU process after the cycle', () => {
      const pid = ipmi.qemuPid();
      return pid !== null && pid !== first && pid;
    });

    // Reset goes to the running machine (no new process).
    expect((await ctl('power', 'reset', 'node1')).code).toBe(0);
    expect(ipmi.qemuPid()).toBe(second);

    expect((await ctl('power', 'off', 'node1')).code).toBe(0);
    await ipmi.waitPower('off');
    expect((await ctl('power', 'status', 'node1', '--json')).stdout).toContain('"power": "off"');
    expect((await d.api<{ state: string }>('GET', '/api/v1/nodes/node1')).state).toBe('off');
  }, 60_000);

  it('--label and --all select nodes; those without a BMC are skipped and named', async () => {
    const r = await ctl('power', 'status', '--label', 'lab');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`node1: off (ipmi BMC 127.0.0.1:${ipmi.opts.lanPort})\nskipped, no BMC: node4\n`);
    const json = JSON.parse((await ctl('--json', 'power', 'status', '--label', 'lab')).stdout) as {
      results: { node: string }[];
      noBmc: string[];
    };
    expect(json.results.map((x) => x.node)).toEqual(['node1']);
    expect(json.noBmc).toEqual(['node4']);
    expect((await ctl('power', 'status', '--label', 'nosuch')).stdout).toBe('no node selected\n');
    const both = await ctl('power', 'off', 'node1', '--all');
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('not both');
  });

  it('reboot --hard power-cycles through the BMC; a node without one is a clear error', async () => {
    await ctl('power', 'on', 'node1');
    const before = await ipmi.waitPower('on');
    const r = await ctl('reboot', '--hard', 'node1');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`node1: power cycled through the ipmi BMC 127.0.0.1:${ipmi.opts.lanPort}\n`);
    await waitUntil('a new QEMU process after reboot --hard', () => {
      const pid = ipmi.qemuPid();
      return pid !== null && pid !== before;
    });
    const none = await ctl('reboot', '--hard', 'node4');
    expect(none.code).not.toBe(0);
    expect(none.stderr).toContain('node4: node4 has no BMC in the cluster file');
    expect(none.stderr).toContain('hint: give it bmc:');
    await ctl('power', 'off', 'node1');
    await ipmi.waitPower('off');
    // A hard reboot of a machine that is off powers it on (BMCs refuse to cycle it).
    const fromOff = await ctl('reboot', '--hard', 'node1');
    expect(fromOff.stdout).toBe(`node1: it was off: powered on through the ipmi BMC 127.0.0.1:${ipmi.opts.lanPort}\n`);
    await ipmi.waitPower('on');
    await ctl('power', 'off', 'node1');
    await ipmi.waitPower('off');
  }, 60_000);

  it('wrong credentials: an error naming node and BMC, then back-off; the same BMC with the right ones still answers', async () => {
    const r = await ctl('power', 'on', 'node3');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(
      `node3: power on through the ipmi BMC 127.0.0.1:${ipmi.opts.lanPort} failed: ipmi BMC 127.0.0.1:${ipmi.opts.lanPort} refused the credentials of user "admin"`,
    );
    expect(ipmi.qemuPid()).toBeNull();
    const again = await ctl('power', 'on', 'node3');
    expect(again.stderr).toMatch(/node3: the ipmi BMC 127\.0\.0\.1:\d+ failed 1 time\(s\) in a row; not calling it again for \d s/);
    expect((await ctl('power', 'status', 'node1')).stdout).toMatch(/^node1: off/);
  }, 30_000);

  it('a BMC that does not answer: a timeout naming node and BMC, back-off, other nodes answered meanwhile', async () => {
    const t0 = Date.now();
    const [slow, other] = await Promise.all([ctl('power', 'status', 'node2'), ctl('power', 'status', 'node1')]);
    const took = Date.now() - t0;
    expect(slow.code).not.toBe(0);
    expect(slow.stderr).toContain(`node2: power status through the ipmi BMC 127.0.0.1:${silent.address().port} failed: ipmi BMC`);
    expect(slow.stderr).toContain('did not answer');
    expect(other.stdout).toMatch(/^node1: off/);
    expect(took).toBeLessThan(25_000);
    // A storm of retries is refused without touching the BMC.
    const storm = await Promise.all(
      [1, 2, 3, 4, 5].map(() => fetch(`${d.url}/api/v1/nodes/node2/power`, { headers: { authorization: `Bearer ${d.token}` } })),
    );
    for (const s of storm) {
      expect(s.status).toBe(503);
      expect(((await s.json()) as { error: { message: string } }).error.message).toContain('not calling it again for');
    }
    const events = await d.api<{ events: ClusterEvent[] }>('GET', '/api/v1/events?kind=node.power&limit=1000');
    const node2 = events.events.filter((e) => e.node === 'node2');
    // Six calls, two events: the refusals of one back-off window are recorded once.
    expect(node2.map((e) => (e.data as { code?: string }).code)).toEqual(['DSP_ERR_BMC_TIMEOUT', 'DSP_ERR_BMC_BACKOFF']);
  }, 60_000);
});

describe('Redfish (HTTPS → lab service → QEMU by QMP)', () => {
  it('power on, status, cycle, off with the certificate checked against the CA given', async () => {
    const bmcName = `redfish BMC 127.0.0.1:${rf.port}`;
    expect((await ctl('power', 'status', 'node5')).stdout).toBe(`node5: off (${bmcName})\n`);
    expect((await ctl('power', 'on', 'node5')).code).toBe(0);
    expect(rf.on).toBe(true);
    const first = rf.machine!.pid;
    expect((await ctl('power', 'status', 'node5')).stdout).toBe(`node5: on (${bmcName})\n`);
    expect((await ctl('reboot', '--hard', 'node5')).stdout).toBe(`node5: power cycled through the ${bmcName}\n`);
    expect(rf.on).toBe(true);
    expect(rf.machine!.pid).not.toBe(first);
    expect(rf.requests).toContain('POST /redfish/v1/Systems/1/Actions/ComputerSystem.Reset');
    expect((await ctl('power', 'off', 'node5')).code).toBe(0);
    expect(rf.on).toBe(false);
  }, 60_000);

  it('a certificate that does not verify is refused before any request; verify: false lets a group through to a 401', async () => {
    const r = await ctl('power', 'on', 'node6');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`node6: power on through the redfish BMC 127.0.0.1:${rfOtherCa.port} failed:`);
    expect(r.stderr).toContain('its certificate did not verify');
    expect(rfOtherCa.requests).toEqual([]);
    expect(rfOtherCa.on).toBe(false);

    const loose = await ctl('power', 'status', 'node7');
    expect(loose.stderr).toContain(`node7: power status through the redfish BMC 127.0.0.7:${rfLoose.port} failed:`);
    expect(loose.stderr).toContain('refused the credentials of user "root" (HTTP 401)');
    expect(rfLoose.requests).toEqual(['GET /redfish/v1/Systems']);
  }, 30_000);
});

describe('credentials', () => {
  it('appear in no API answer, no CLI output and no dispatcher log line', async () => {
    const answers = await Promise.all([
      d.text('/api/v1/nodes'),
      d.text('/api/v1/nodes/node1'),
      d.text('/api/v1/events?limit=10000'),
      d.text('/api/v1/openapi.json'),
    ]);
    const everything = [...answers, ...said, d.output(), d.stderr()].join('\n');
    expect(said.length).toBeGreaterThan(20);
    expect(d.logs.filter((l) => l.msg === 'node power failed').length).toBeGreaterThan(3);
    for (const s of SECRETS) expect(everything).not.toContain(s);
  });
});
