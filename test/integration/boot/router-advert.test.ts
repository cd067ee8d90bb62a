/**
 * The dispatcher answers IPv6 router solicitations on the node network with "no router here"
 * (router-advert.c), so iPXE, which waits for every configurator of its NIC, does not spend
 * 16 s soliciting a router that does not exist. The soliciting host here is a Linux network
 * namespace: its kernel sends router solicitations when its link comes up, and counts the
 * advertisements it receives. The advertisement must configure nothing on it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import { spawnDispatcher, type DispatcherProcess } from '../../lab/dispatcher.js';
import { createLab, type Iface, type Lab, type Netns } from '../../lab/netns.js';

let lab: Lab;
let srv: Netns;
let cli: Netns;
let srvIf: Iface;
let cliIf: Iface;

beforeAll(async () => {
  lab = await createLab('bootra');
  srv = await lab.namespace('srv');
  cli = await lab.namespace('cli');
  [srvIf, cliIf] = await lab.veth({ ns: srv, address: '10.63.0.1/24' }, { ns: cli });
});

afterAll(async () => {
  await lab?.cleanup();
});

function startDispatcher(env: NodeJS.ProcessEnv = {}): DispatcherProcess {
  return spawnDispatcher({ ns: srv, env, args: ['--interface', srvIf.name, '--dhcp', 'full', '--range', '10.63.0.100-10.63.0.199'] });
}

/** One counter of the client namespace's /proc/net/snmp6. */
async function snmp6(ns: Netns, name: string): Promise<number> {
  const r = await ns.exec('cat', ['/proc/net/snmp6']);
  const line = r.stdout.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}\t`));
  return Number(line?.trim().split(/\s+/)[1] ?? NaN);
}

/** Link down and up: the client's kernel solicits routers again once its link-local address is ready. */
async function relink(): Promise<void> {
  await cli.exec('ip', ['link', 'set', 'dev', cliIf.name, 'down']);
  await cli.exec('ip', ['link', 'set', 'dev', cliIf.name, 'up']);
}

async function waitFor(what: string, cond: () => Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

describe('IPv6 router solicitations on the node network', () => {
  it('are answered with an advertisement that configures nothing', async () => {
    const d = startDispatcher();
    await d.waitForOutput(/answering IPv6 router solicitations/, 60_000);
    const before = await snmp6(cli, 'Icmp6InRouterAdvertisements');
    const sentBefore = await snmp6(cli, 'Icmp6OutRouterSolicits');
    await relink();
    await waitFor('the client to solicit a router', async () => (await snmp6(cli, 'Icmp6OutRouterSolicits')) > sentBefore, 15_000);
    await waitFor('an advertisement at the client', async () => (await snmp6(cli, 'Icmp6InRouterAdvertisements')) > before, 5_000);
    // lifetime 0, no prefix: no default route, no address beyond the link-local one
    expect((await cli.exec('ip', ['-6', 'route', 'show', 'default'])).stdout.trim()).toBe('');
    expect((await cli.exec('ip', ['-6', 'addr', 'show', 'dev', cliIf.name, 'scope', 'global'])).stdout.trim()).toBe('');
    // the kernel drops an RA whose hop limit is not 255 (RFC 4861 §6.1.2) and counts it as an error
    expect(await snmp6(cli, 'Icmp6InErrors')).toBe(0);
    await d.stop();
    expect(d.output()).toMatch(/"routerSolicitations":[1-9]\d*,"routerAdvertisements":[1-9]/);
  });

  it('are left alone with LC_ROUTER_ADVERT=0', async () => {
    const d = startDispatcher({ LC_ROUTER_ADVERT: '0' });
    await d.waitForOutput(/DHCP serving/, 60_000);
    const before = await snmp6(cli, 'Icmp6InRouterAdvertisements');
    const sentBefore = await snmp6(cli, 'Icmp6OutRouterSolicits');
    await relink();
    await waitFor('the client to solicit a router', async () => (await snmp6(cli, 'Icmp6OutRouterSolicits')) > sentBefore, 15_000);
    await sleep(1000);
    expect(await snmp6(cli, 'Icmp6InRouterAdvertisements')).toBe(before);
    expect(d.output()).not.toMatch(/answering IPv6 router solicitations/);
    await d.stop();
  });
});
