import { describe, expect, it } from 'vitest';
import {
  AgentConfigError,
  defaultWorkRoot,
  dispatcherUrls,
  IMAGE_KEY_PATH,
  parseKernelCmdline,
  resolveSettings,
  type AgentFlags,
} from '../../../node-agent/src/config.js';
import { backoffMs, BACKOFF_MAX_MS, macOfAddress } from '../../../node-agent/src/connection.js';

const opts = (files: string[] = []) => ({ cpuCount: 8, fileExists: (p: string) => files.includes(p), tmpDir: '/tmp' });
const resolve = (flags: AgentFlags, env: Record<string, string> = {}, cmdline = '', files: string[] = []) =>
  resolveSettings(flags, env, parseKernelCmdline(cmdline), opts(files));

describe('agent settings', () => {
  it('takes flags over environment over the kernel command line', () => {
    const cmd = 'BOOT_IMAGE=/vmlinuz lc.dispatcher=http://10.0.0.1:8080 lc.token=kernel quiet';
    expect(resolve({}, {}, cmd)).toMatchObject({
      wsUrl: 'ws://10.0.0.1:8080/api/v1/agent',
      httpBase: 'http://10.0.0.1:8080',
      auth: { kind: 'boot', token: 'kernel' },
    });
    expect(resolve({}, { LC_DISPATCHER: 'http://env:1', LC_TOKEN: 'env' }, cmd)).toMatchObject({
      httpBase: 'http://env:1',
      auth: { token: 'env' },
    });
    expect(resolve({ dispatcher: 'flag:2', token: 'flag' }, { LC_DISPATCHER: 'http://env:1', LC_TOKEN: 'env' }, cmd)).toMatchObject({
      httpBase: 'http://flag:2',
      auth: { token: 'flag' },
    });
  });

  it('uses the enrollment token when given, else the boot token', () => {
    expect(resolve({ dispatcher: 'h:1', enrollToken: 'e' }, { LC_TOKEN: 'b' }).auth).toEqual({ kind: 'enroll', token: 'e' });
    expect(resolve({ dispatcher: 'h:1' }, { LC_ENROLL_TOKEN: 'e' }).auth).toEqual({ kind: 'enroll', token: 'e' });
    expect(() => resolve({ dispatcher: 'h:1' })).toThrow(/no token/);
  });

  it('finds the dispatcher key: flag, env, image file, then the kernel command line', () => {
    const base = { dispatcher: 'h:1', token: 't' };
    expect(resolve({ ...base, dispatcherKey: '/k' }, { LC_PUBKEY_FILE: '/e' }).key).toEqual({ kind: 'file', path: '/k' });
    expect(resolve(base, { LC_PUBKEY_FILE: '/e' }).key).toEqual({ kind: 'file', path: '/e' });
    expect(resolve(base, {}, 'lc.pubkey=AAAA', [IMAGE_KEY_PATH]).key).toEqual({ kind: 'file', path: IMAGE_KEY_PATH });
    expect(resolve(base, {}, 'lc.pubkey=AAAA').key).toMatchObject({ kind: 'inline', b64: 'AAAA' });
    expect(resolve(base).key).toBeNull();
  });

  it('reads insecure mode, MAC, slots and defaults', () => {
    const s = resolve({ dispatcher: 'h:1', token: 't' }, {}, 'lc.insecure=1 BOOTIF=01-52-54-00-AB-CD-EF');
    expect(s).toMatchObject({
      insecure: true,
      mac: '52:54:00:ab:cd:ef',
      slots: 8,
      prefetch: 0,
      workDir: '/tmp/lc-agent-525400abcdef',
      allowPower: false,
    });
    expect(resolve({ dispatcher: 'h:1', token: 't', mac: '52-54-00-00-00-01', slots: 3 }, { LC_MAC: 'nope' })).toMatchObject({
      mac: '52:54:00:00:00:01',
      slots: 3,
    });
    expect(resolve({ dispatcher: 'h:1', token: 't' }, { LC_SLOTS: '5' }).slots).toBe(5);
  });

  it('reads what tasks get: memory (MiB), the reserve and GPUs, else defaults', () => {
    expect(resolve({ dispatcher: 'h:1', token: 't' })).toMatchObject({ taskMemMiB: null, reserveMiB: 128, gpus: null });
    expect(resolve({ dispatcher: 'h:1', token: 't', taskMemory: '2048' }, { LC_RESERVE_MEMORY: '256' }, 'lc.gpus=2')).toMatchObject({
      taskMemMiB: 2048,
      reserveMiB: 256,
      gpus: 2,
    });
  });

  it.each([
    [{ dispatcher: 'h:1', token: 't', slots: 0 }, /slots/],
    [{ dispatcher: 'h:1', token: 't', mac: 'xyz' }, /--mac: "xyz" is not a MAC/],
    [{ dispatcher: 'ftp://h', token: 't' }, /use http/],
    [{ token: 't' }, /no dispatcher URL/],
    [{ dispatcher: 'h:1', token: 't', prefetch: -1 }, /--prefetch/],
    [{ dispatcher: 'h:1', token: 't', taskMemory: '2G' }, /task memory: expected MiB/],
    [{ dispatcher: 'h:1', token: 't', reserveMemory: '-1' }, /reserve memory: expected MiB/],
    [{ dispatcher: 'h:1', token: 't', gpus: 'two' }, /gpus: expected an integer/],
  ] as [AgentFlags, RegExp][])('refuses %j', (flags, re) => {
    expect(() => resolve(flags)).toThrow(AgentConfigError);
    expect(() => resolve(flags)).toThrow(re);
  });

  it('turns any dispatcher address into the agent WebSocket URL', () => {
    expect(dispatcherUrls('10.0.0.1:8080')).toEqual({ wsUrl: 'ws://10.0.0.1:8080/api/v1/agent', httpBase: 'http://10.0.0.1:8080' });
    expect(dispatcherUrls('https://d.example/')).toEqual({ wsUrl: 'wss://d.example/api/v1/agent', httpBase: 'https://d.example' });
    expect(dispatcherUrls('ws://d:1/custom')).toEqual({ wsUrl: 'ws://d:1/custom', httpBase: 'http://d:1' });
  });

  it('backs off exponentially with jitter, capped', () => {
    expect(backoffMs(0, () => 0)).toBe(125);
    expect(backoffMs(0, () => 1)).toBe(250);
    expect(backoffMs(3, () => 0.5)).toBe(1500);
    expect(backoffMs(50, () => 1)).toBe(BACKOFF_MAX_MS);
    expect(backoffMs(50, () => 0)).toBe(BACKOFF_MAX_MS / 2);
  });

  it('finds the MAC of the NIC that holds the local address, never loopback', () => {
    const ifaces = {
      lo: [{ address: '127.0.0.1', netmask: '255.0.0.0', family: 'IPv4', mac: '00:00:00:00:00:00', internal: true, cidr: null }],
      eth1: [{ address: '10.42.0.5', netmask: '255.255.255.0', family: 'IPv4', mac: '52:54:00:AA:BB:CC', internal: false, cidr: null }],
    } as unknown as NodeJS.Dict<import('node:os').NetworkInterfaceInfo[]>;
    expect(macOfAddress('10.42.0.5', ifaces)).toBe('52:54:00:aa:bb:cc');
    expect(macOfAddress('::ffff:10.42.0.5', ifaces)).toBe('52:54:00:aa:bb:cc');
    expect(macOfAddress('127.0.0.1', ifaces)).toBeUndefined();
  });
});

describe('default work root', () => {
  const mounts = (tmp: string, shm = 'tmpfs') => `/dev/vda / ext4 rw 0 0\n${tmp}\nshm /dev/shm ${shm} rw 0 0\n`;
  it.each([
    ['/tmp on tmpfs', mounts('tmpfs /tmp tmpfs rw 0 0'), '/tmp'],
    ['/tmp on the disk root, /dev/shm a tmpfs', mounts(''), '/dev/shm'],
    ['no tmpfs anywhere', mounts('', 'ext4'), '/tmp'],
    ['the RAM image (rootfs)', 'rootfs / rootfs rw 0 0\n', '/tmp'],
  ])('with %s: %s', (_w, m, want) => expect(defaultWorkRoot(m, '/tmp')).toBe(want));
});
