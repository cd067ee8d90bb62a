import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  agentDispatchers,
  bootScript,
  kernelCommandLine,
  refusedScript,
  scriptSafe,
  unidentifiedScript,
} from '../../../dispatcher/src/boot/ipxe-script.js';
import { parseMac, type Mac } from '../../../dispatcher/src/nodes/mac.js';

const mac = parseMac('52:54:00:12:34:56') as Mac;
const input = { mac, nodeName: 'node3', dispatcherUrl: 'http://10.42.0.1:8080', token: 'tok_EN-123', kernelArgs: 'quiet', pending: false };

const lines = (s: string) => s.split('\n');
const line = (s: string, cmd: string) => lines(s).find((l) => l.startsWith(`${cmd} `)) ?? '';

describe('boot script', () => {
  const s = bootScript(input);

  it('starts with #!ipxe and ends with a newline', () => {
    expect(s.startsWith('#!ipxe\n')).toBe(true);
    expect(s.endsWith('\n')).toBe(true);
  });

  it('loads the kernel by URL with the MAC, and the command line /init reads', () => {
    const k = line(s, 'kernel');
    expect(k).toContain('--name vmlinuz http://10.42.0.1:8080/image/vmlinuz?mac=52-54-00-12-34-56 ');
    for (const arg of [
      'initrd=initrd.img',
      'lc.dispatcher=http://10.42.0.1:8080',
      'lc.token=tok_EN-123',
      'console=tty0',
      'console=ttyS0,115200',
      'quiet',
    ])
      expect(k.split(' ')).toContain(arg);
    expect(k.endsWith('|| goto retry')).toBe(true);
  });

  it('names the initrd initrd.img, as initrd= on the command line says (UEFI needs it)', () => {
    expect(line(s, 'initrd')).toBe('initrd --name initrd.img http://10.42.0.1:8080/image/initrd.img?mac=52-54-00-12-34-56 || goto retry');
  });

  it('retries a failed download: sleep, then chain back to a fresh script', () => {
    const l = lines(s);
    expect(l.indexOf(':retry')).toBeGreaterThan(l.indexOf('boot || goto retry'));
    expect(l).toContain('sleep 10');
    expect(line(s, 'chain')).toBe('chain --autofree http://10.42.0.1:8080/boot.ipxe?mac=52-54-00-12-34-56');
  });

  it('says when the machine waits for approval', () => {
    expect(line(bootScript({ ...input, pending: true }), 'echo')).toContain('waiting for approval');
  });

  it('cannot be broken out of by configured kernel arguments', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 80 }), (args) => {
        const script = bootScript({ ...input, kernelArgs: args });
        const k = line(script, 'kernel');
        expect(lines(script).filter((l) => l.startsWith('kernel ')).length).toBe(1);
        expect(k.endsWith('|| goto retry')).toBe(true);
        expect(k.indexOf('||')).toBe(k.length - '|| goto retry'.length);
        expect(k).not.toContain('${');
        expect(lines(script)).toHaveLength(lines(bootScript(input)).length);
      }),
      { numRuns: 500 },
    );
  });

  it('puts exactly one initrd= and one lc.token= on the command line', () => {
    const cl = kernelCommandLine(input).split(' ');
    expect(cl.filter((a) => a.startsWith('initrd=')).length).toBe(1);
    expect(cl.filter((a) => a.startsWith('lc.token=')).length).toBe(1);
  });

  it("loads an image's root.cpio before the compressed base initrd, named on the command line in that order", () => {
    const r = bootScript({ ...input, withRoot: true });
    const initrds = lines(r).filter((l) => l.startsWith('initrd '));
    expect(initrds).toEqual([
      'initrd --name root.cpio http://10.42.0.1:8080/image/root.cpio?mac=52-54-00-12-34-56 || goto retry',
      'initrd --name initrd.img http://10.42.0.1:8080/image/initrd.img?mac=52-54-00-12-34-56 || goto retry',
    ]);
    const cl = line(r, 'kernel').split(' ');
    expect(cl.filter((a) => a.startsWith('initrd='))).toEqual(['initrd=root.cpio', 'initrd=initrd.img']);
    expect(lines(s).some((l) => l.includes('root.cpio'))).toBe(false);
  });
});

describe('scripts for machines that may not boot', () => {
  it('tells a refused machine why, waits and asks again: no kernel, no hang', () => {
    const s = refusedScript({
      mac,
      dispatcherUrl: 'http://10.42.0.1:8080',
      reason: 'unknown MAC and the cluster file says enrollment: deny',
    });
    expect(s.startsWith('#!ipxe\n')).toBe(true);
    expect(s).toContain(
      'echo lilcluster: this machine (52:54:00:12:34:56) may not boot: unknown MAC and the cluster file says enrollment: deny',
    );
    expect(s).toMatch(/^sleep \d+$/m);
    expect(line(s, 'chain')).toBe('chain --autofree http://10.42.0.1:8080/boot.ipxe?mac=52-54-00-12-34-56');
    expect(line(s, 'kernel')).toBe('');
  });

  it('asks an unidentified machine to come back with its MAC', () => {
    const s = unidentifiedScript({ dispatcherUrl: 'http://10.42.0.1:8080', reason: 'no MAC' });
    expect(line(s, 'chain')).toBe('chain --autofree http://10.42.0.1:8080/boot.ipxe?mac=${mac:hexhyp}');
  });
});

describe('scriptSafe', () => {
  it.each([
    ['line breaks', 'a\nkernel evil', 'a kernel evil'],
    ['setting expansion', 'x=${net0/ip}', 'x=$ {net0/ip}'],
    ['command chaining', 'a || shell', 'a shell'],
    ['comments', 'a # b', 'a b'],
  ])('neutralises %s', (_n, input, want) => {
    expect(scriptSafe(input)).toBe(want);
  });
});

describe('lc.dispatcher= with standby dispatchers (config peers)', () => {
  const peers = ['http://10.42.0.2:8080', 'http://10.42.0.3:8080'];

  it('names the advertised address first, then every peer once', () => {
    expect(kernelCommandLine({ ...input, peers }).split(' ')).toContain(
      'lc.dispatcher=http://10.42.0.1:8080,http://10.42.0.2:8080,http://10.42.0.3:8080',
    );
    expect(agentDispatchers('http://10.42.0.2:8080', peers)).toBe('http://10.42.0.2:8080,http://10.42.0.3:8080');
    expect(agentDispatchers('http://10.42.0.1:8080')).toBe('http://10.42.0.1:8080');
  });

  it.each([
    ['a space', 'http://10.42.0.2:8080 lc.token=x'],
    ['a comma', 'http://a:1,http://b:2'],
    ['script syntax', 'http://h/${x}'],
    ['another scheme', 'ftp://10.42.0.2'],
  ])('leaves out a peer with %s: the command line keeps one URL list', (_what, bad) => {
    expect(agentDispatchers('http://10.42.0.1:8080', [bad, 'http://10.42.0.3:8080'])).toBe('http://10.42.0.1:8080,http://10.42.0.3:8080');
  });
});
