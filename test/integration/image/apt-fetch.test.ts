/**
 * A Debian package that cannot be downloaded stops the build with a message that says what
 * and what to do, and leaves nothing half-written in the cache. The failure is real: apt-get
 * itself, pointed (APT_CONFIG) at a proxy port where nothing listens.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { aptCandidate, fetchPackage } from '../../../image/src/apt.js';
import { ImageBuildError } from '../../../image/src/errors.js';

const work = mkdtempSync(join(tmpdir(), 'lc-apt-fetch-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('fetching a package when the mirror cannot be reached', () => {
  it('names the package and version, says what to check, and leaves the cache empty', async () => {
    const { pkg } = await aptCandidate('busybox-static'); // from the local package lists
    const conf = join(work, 'apt.conf');
    writeFileSync(conf, 'Acquire::http::Proxy "http://127.0.0.1:9";\nAcquire::https::Proxy "http://127.0.0.1:9";\nAcquire::Retries "0";\n');
    const cache = join(work, 'cache');
    const saved = process.env.APT_CONFIG;
    process.env.APT_CONFIG = conf;
    let err: unknown;
    try {
      await fetchPackage(pkg, cache);
    } catch (e) {
      err = e;
    } finally {
      if (saved === undefined) delete process.env.APT_CONFIG;
      else process.env.APT_CONFIG = saved;
    }
    expect(err).toBeInstanceOf(ImageBuildError);
    expect(err).toMatchObject({
      code: 'IMG_ERR_PACKAGE',
      message: expect.stringContaining(`could not download busybox-static ${pkg.version}`),
    });
    expect((err as ImageBuildError).hint).toMatch(/apt-get update.*network to the Debian mirror/);
    expect(readdirSync(cache)).toEqual([]); // no partial download, no .deb
  }, 60_000);
});
