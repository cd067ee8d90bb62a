import { describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { addKexecTools, collectKexecTools, KEXEC_PATH, kexecToolsSize } from '../../../image/src/kexec-tools.js';
import { Rootfs } from '../../../image/src/rootfs.js';

/** The build machines (test/lab/deps.sh) have Debian's kexec-tools; elsewhere the build must say what to install. */
const hostHasKexec = existsSync(KEXEC_PATH);

describe('kexec in the base image', () => {
  it('is refused with the package to install when the build machine lacks kexec-tools', async () => {
    await expect(collectKexecTools('/nonexistent/sbin/kexec')).rejects.toMatchObject({
      code: 'IMG_ERR_MISSING_TOOL',
      message: expect.stringMatching(/^kexec-tools is not installed on the build machine \(\/nonexistent\/sbin\/kexec: ENOENT\)$/),
      hint: expect.stringMatching(/apt-get install kexec-tools/),
    });
  });

  it.runIf(hostHasKexec)('ships the host kexec with every library its loader needs, libc once beside what is already there', async () => {
    const k = await collectKexecTools();
    expect(k.version).toMatch(/^kexec-tools \d+\.\d+/);
    expect(k.files.map((f) => f.path)).toEqual(expect.arrayContaining(['/lib/x86_64-linux-gnu/libc.so.6', '/lib64/ld-linux-x86-64.so.2']));
    const fs = new Rootfs();
    // Node's libc, as the build puts it first: the same host file, so no conflict.
    const libc = k.files.find((f) => f.path.endsWith('/libc.so.6'))!;
    fs.addFile(libc.path, libc.data, 0o644);
    addKexecTools(fs, k);
    expect(fs.get(KEXEC_PATH)).toMatchObject({ type: 'file', mode: 0o755 });
    for (const f of k.files) expect(fs.has(f.path)).toBe(true);
    expect(kexecToolsSize(k)).toBeGreaterThan(k.binary.length);
    expect((await collectKexecTools()).digest).toBe(k.digest);
  });

  it.runIf(hostHasKexec)('refuses an image where the loader would not find its libraries', async () => {
    const k = await collectKexecTools();
    const withoutXen = { ...k, files: k.files.filter((f) => !/libxenctrl/.test(f.path)) };
    expect(() => addKexecTools(new Rootfs(), withoutXen)).toThrow(
      expect.objectContaining({ code: 'IMG_ERR_INPUT', message: expect.stringMatching(/would not find libxenctrl\.so/) }),
    );
  });
});
