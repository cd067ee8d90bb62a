/**
 * The pure parts of FROM=/PACKAGES= images: reference and package-list parsing, root.env,
 * apt's and dpkg's texts, the OCI layout's JSON, skopeo's failures in our words, the squashfs
 * options, and the cpio header of a streamed file.
 */
import { describe, expect, it } from 'vitest';
import { resolve } from 'node:path';
import { CpioWriter } from '../../../image/src/cpio.js';
import { aptSourceFiles, aptUnknownPackages, osCodename, parseAptSimulation, parseDpkgStatus } from '../../../image/src/debian-root.js';
import { ImageBuildError } from '../../../image/src/errors.js';
import { classifyFetchFailure, configPath, manifestForRef, parseImageManifest, pinnedRef, redact } from '../../../image/src/oci.js';
import {
  formatRootEnv,
  isLoopbackRegistry,
  parseFrom,
  parseImageName,
  parsePackages,
  parseRootEnv,
} from '../../../image/src/root-source.js';
import { compressionArgs, parseSquashfsOptions } from '../../../image/src/squashfs.js';

const abs = (p: string) => resolve('/work', p);
const D = `sha256:${'a'.repeat(64)}`;

const code = (f: () => unknown) => {
  try {
    f();
  } catch (err) {
    return err instanceof ImageBuildError ? err.code : `not ImageBuildError: ${String(err)}`;
  }
  return 'no error';
};

describe('FROM=', () => {
  it.each([
    ['docker://127.0.0.1:5000/lab/ml:1', 'docker', '127.0.0.1:5000', undefined, 'ml'],
    ['docker://debian:bookworm-slim', 'docker', 'docker.io', undefined, 'debian'],
    ['docker://ghcr.io/org/tool@' + D, 'docker', 'ghcr.io', undefined, 'tool'],
    ['docker://localhost/x', 'docker', 'localhost', undefined, 'x'],
    ['oci:./layout:v2', 'oci', undefined, '/work/layout', 'layout'],
    ['oci-archive:/tmp/My Image.tar', 'oci-archive', undefined, '/tmp/My Image.tar', 'my-image'],
    ['docker-archive:img.tar', 'docker-archive', undefined, '/work/img.tar', 'img'],
    ['containers-storage:localhost/ml:latest', 'containers-storage', undefined, undefined, 'ml'],
  ])('%s is a %s reference', (ref, transport, registry, localPath, name) => {
    if (ref.includes(' ')) {
      expect(code(() => parseFrom(ref, abs))).toBe('IMG_ERR_OPTION'); // a space could be two words in make
      return;
    }
    const s = parseFrom(ref, abs);
    expect(s).toMatchObject({ transport, registry, localPath, defaultName: name });
  });

  it('hands skopeo the absolute path of a local layout, with its tag', () => {
    expect(parseFrom('oci:./layout:v2', abs).ref).toBe('oci:/work/layout:v2');
  });

  it.each(['', 'debian:12', 'http://x/y', 'docker:debian', 'docker://', 'oci:', 'containers-storage:', 'docker://a/b\nc'])(
    'refuses %j with IMG_ERR_OPTION',
    (ref) => expect(code(() => parseFrom(ref, abs))).toBe('IMG_ERR_OPTION'),
  );

  it('reaches only a loopback registry over plain HTTP', () => {
    expect(['127.0.0.1:5000', 'localhost', 'localhost:80', '[::1]:5000'].every(isLoopbackRegistry)).toBe(true);
    expect(['127.0.0.2:5000', 'docker.io', 'localhost.example.com', '10.0.0.1:5000'].some(isLoopbackRegistry)).toBe(false);
  });

  it('pins a docker reference to the digest it inspected, and leaves others alone', () => {
    const src = (r: string) => parseFrom(r, abs);
    expect(pinnedRef(src('docker://127.0.0.1:5000/lab/ml:1'), D)).toBe(`docker://127.0.0.1:5000/lab/ml@${D}`);
    expect(pinnedRef(src('docker://127.0.0.1:5000/ml'), D)).toBe(`docker://127.0.0.1:5000/ml@${D}`);
    expect(pinnedRef(src(`docker://h.io/ml@${D}`), D)).toBe(`docker://h.io/ml@${D}`);
    expect(pinnedRef(src('oci:/x:v1'), D)).toBe('oci:/x:v1');
  });
});

describe('PACKAGES= and IMAGE=', () => {
  it('takes names and name=version, spaces or commas', () => {
    const s = parsePackages(' python3-numpy,r-base-core  jq=1.6-2.1 ');
    expect(s.packages).toEqual(['python3-numpy', 'r-base-core', 'jq=1.6-2.1']);
    expect(s.defaultName).toBe('python3-numpy-r-base-core-jq');
  });

  it.each(['', '  ', 'Python3', 'a', 'jq jq', 'rm -rf', 'x;y', 'jq=1 2'])('refuses %j', (v) =>
    expect(code(() => parsePackages(v))).toBe('IMG_ERR_OPTION'),
  );

  it.each(['ml', 'python3-numpy', 'a.b_c-1'])('takes image name %s', (n) => expect(parseImageName(n)).toBe(n));
  it.each(['', 'ML', '../x', 'a/b', '-x', 'x'.repeat(64)])('refuses image name %j', (n) =>
    expect(code(() => parseImageName(n))).toBe('IMG_ERR_OPTION'),
  );
});

describe('root.env', () => {
  const base = {
    image: 'ml',
    version: 'abcdef012345',
    source: 'docker://h/ml:1',
    path: '/usr/bin:/bin',
    health: 'python3 -c "import numpy"',
    bytes: 42,
  };

  it('is KEY=VALUE lines in the contract order, read back the same', () => {
    const text = formatRootEnv(base);
    expect(text.split('\n').map((l) => l.split('=')[0])).toEqual([
      'LC_ROOT_IMAGE',
      'LC_ROOT_VERSION',
      'LC_ROOT_SOURCE',
      'LC_ROOT_PATH',
      'LC_ROOT_HEALTH',
      'LC_ROOT_BYTES',
      '',
    ]);
    expect(parseRootEnv(text)).toMatchObject({ LC_ROOT_HEALTH: 'python3 -c "import numpy"', LC_ROOT_BYTES: '42' });
  });

  it.each(['health', 'path', 'source'] as const)('refuses a %s with a line break or NUL (it would forge a line)', (k) => {
    for (const bad of ['x\nLC_ROOT_PATH=/evil', 'x\rY', 'x\0y'])
      expect(code(() => formatRootEnv({ ...base, [k]: bad }))).toBe('IMG_ERR_OPTION');
  });
});

describe("apt's and dpkg's texts", () => {
  it('finds the codename in os-release', () => {
    expect(osCodename('NAME="Debian GNU/Linux"\nVERSION_CODENAME=bookworm\nID=debian\n')).toBe('bookworm');
    expect(osCodename('VERSION_CODENAME="trixie"\n')).toBe('trixie');
    expect(osCodename('ID=debian\n')).toBeUndefined();
  });

  it('takes the source files apt reads, in its order', () => {
    expect(aptSourceFiles(true, ['z.list', 'debian.sources', 'x.list.disabled-by-farm', 'a.sources.save', 'b.list'])).toEqual([
      '/etc/apt/sources.list',
      '/etc/apt/sources.list.d/b.list',
      '/etc/apt/sources.list.d/debian.sources',
      '/etc/apt/sources.list.d/z.list',
    ]);
    expect(aptSourceFiles(false, [])).toEqual([]);
  });

  it("reads apt-get -s's Inst lines, sorted by name", () => {
    const text = [
      'NOTE: This is only a simulation!',
      'Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64]) []',
      'Inst gcc-12-base (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])',
      'Inst base-files [12.4] (12.4+deb12u13 Debian:12.15/oldstable [amd64])',
      'Conf libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64])',
    ].join('\n');
    expect(parseAptSimulation(text)).toEqual([
      { name: 'base-files', version: '12.4+deb12u13' },
      { name: 'gcc-12-base', version: '12.2.0-14+deb12u1' },
      { name: 'libc6', version: '2.36-9+deb12u14' },
    ]);
  });

  it('reads the installed packages of a dpkg status file', () => {
    const text = [
      'Package: jq\nStatus: install ok installed\nVersion: 1.6-2.1\n',
      'Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n',
      'Package: dash\nStatus: install ok installed\nPriority: required\nVersion: 0.5.12-2\nDescription: x\n more',
    ].join('\n');
    expect(parseDpkgStatus(text)).toEqual([
      { name: 'dash', version: '0.5.12-2' },
      { name: 'jq', version: '1.6-2.1' },
    ]);
  });

  it('names the packages apt cannot find', () => {
    const err =
      "E: Unable to locate package nosuchpkg-lc\nE: Package 'oldthing' has no installation candidate\nE: Version '9' for 'jq' was not found";
    expect(aptUnknownPackages(err)).toEqual(['nosuchpkg-lc', 'oldthing', 'jq=9']);
    expect(aptUnknownPackages('E: Could not get lock')).toEqual([]);
  });
});

describe('the OCI layout', () => {
  const index = {
    schemaVersion: 2,
    manifests: [
      {
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        digest: D,
        size: 1,
        annotations: { 'org.opencontainers.image.ref.name': 'src-1' },
      },
      { digest: 'sha256:short', annotations: { 'org.opencontainers.image.ref.name': 'bad' } },
    ],
  };

  it('finds a manifest by its ref name, and nothing for garbage', () => {
    expect(manifestForRef(index, 'src-1')).toBe(D);
    expect(manifestForRef(index, 'bad')).toBeUndefined();
    for (const junk of [null, 1, {}, { manifests: 'x' }, { manifests: [null] }]) expect(manifestForRef(junk, 'src-1')).toBeUndefined();
  });

  it('reads an image manifest, not an index', () => {
    expect(parseImageManifest({ config: { digest: D }, layers: [{ digest: D }] })).toEqual({ config: D, layers: [D] });
    expect(parseImageManifest({ manifests: [] })).toBeUndefined();
    expect(parseImageManifest({ config: { digest: D }, layers: [{ digest: 'md5:x' }] })).toBeUndefined();
  });

  it("takes PATH from the config's Env", () => {
    expect(configPath({ config: { Env: ['A=1', 'PATH=/opt/bin:/usr/bin'] } })).toBe('/opt/bin:/usr/bin');
    expect(configPath({ config: { Env: ['A=1'] } })).toBeUndefined();
    expect(configPath({ config: {} })).toBeUndefined();
    expect(configPath(null)).toBeUndefined();
  });
});

describe("skopeo's failures, in our words", () => {
  const reg = parseFrom('docker://127.0.0.1:5000/ml:1', abs);
  const local = parseFrom('oci:/x:v1', abs);
  it.each([
    [
      'reading manifest 1 in 127.0.0.1:5000/ml: manifest unknown: manifest unknown',
      reg,
      'IMG_ERR_FROM',
      /no image docker:\/\/127\.0\.0\.1:5000\/ml:1/,
      /list-tags/,
    ],
    [
      'reading manifest 1 in 127.0.0.1:5000/ml: unauthorized: authentication required',
      reg,
      'IMG_ERR_REGISTRY_AUTH',
      /wants credentials/,
      /REGISTRY_AUTH_FILE/,
    ],
    [
      'pinging container registry 127.0.0.1:5000: Get "http://127.0.0.1:5000/v2/": dial tcp 127.0.0.1:5000: connect: connection refused',
      reg,
      'IMG_ERR_FROM',
      /cannot reach registry 127\.0\.0\.1:5000/,
      /running/,
    ],
    [
      'writing blob: happened during read: Digest did not match, expected sha256:aa, got sha256:bb',
      local,
      'IMG_ERR_DIGEST',
      /does not match its digest/,
      /damaged/,
    ],
    ['open /x/index.json: no such file or directory', local, 'IMG_ERR_FROM', /no image oci:\/x:v1/, /path/],
  ])('%s', (stderr, src, c, message, hint) => {
    const f = classifyFetchFailure(stderr, src)!;
    expect(f.code).toBe(c);
    expect(f.message).toMatch(message);
    expect(f.hint).toMatch(hint);
  });

  it("quotes skopeo's log line by its message", () => {
    const f = classifyFetchFailure(
      'time="2026-12-07T03:04:15Z" level=fatal msg="Error reading manifest 1 in 127.0.0.1:5000/ml: manifest unknown: \\"x\\""',
      reg,
    )!;
    expect(f.message).toBe('no image docker://127.0.0.1:5000/ml:1 (Error reading manifest 1 in 127.0.0.1:5000/ml: manifest unknown: "x")');
  });

  it('leaves what it does not know to the generic tool failure', () => {
    expect(classifyFetchFailure('something else entirely', reg)).toBeUndefined();
  });

  it('never repeats a password or a token it was shown', () => {
    const said = 'Get "https://bob:hunter2@r.example/v2/?token=abc123&x=1": unauthorized';
    expect(redact(said)).not.toMatch(/hunter2|abc123/);
    expect(classifyFetchFailure(said, reg)!.message).not.toMatch(/hunter2|abc123/);
  });
});

describe('squashfs options', () => {
  it('defaults to zstd at the measured level, and checks the rest', () => {
    expect(parseSquashfsOptions(undefined, undefined)).toEqual({ compression: 'zstd', level: 15 });
    expect(parseSquashfsOptions('zstd', '3')).toEqual({ compression: 'zstd', level: 3 });
    expect(compressionArgs(parseSquashfsOptions('xz', undefined))).toEqual(['-comp', 'xz', '-Xbcj', 'x86']);
    for (const [c, l] of [
      ['lzo', undefined],
      ['zstd', '23'],
      ['gzip', '0'],
      ['xz', '6'],
      ['zstd', 'x'],
    ] as const)
      expect(code(() => parseSquashfsOptions(c, l))).toBe('IMG_ERR_OPTION');
  });
});

describe('cpio: a streamed file', () => {
  it('gets the header entry() gives the same file', () => {
    const data = new Uint8Array([1, 2, 3, 4, 5]);
    const a = new CpioWriter({ mtime: 7 }).entry({ type: 'file', path: 'root.img', mode: 0o400, data });
    const b = new CpioWriter({ mtime: 7 }).fileHeader('root.img', 0o400, data.length);
    expect(Buffer.from(b)).toEqual(Buffer.from(a[0]!));
  });
});
