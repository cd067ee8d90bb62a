/**
 * The leader's boot-server registry and the routes that take forwarded client identity
 * (dispatcher/src/boot-server/registry.ts, api/boot-servers/routes.ts) on a real in-memory
 * store and fastify app: only a registered boot server's token admits a forwarded MAC and
 * address; the admin token, a made-up token and a removed boot server's token are refused
 * before anything is registered; the list shows each boot server's state.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { createCore, closeCore, type Core } from '../../../dispatcher/src/core.js';
import { resolveConfig } from '../../../dispatcher/src/config.js';
import { silentLogger } from '../../../dispatcher/src/log.js';
import { buildApp } from '../../../dispatcher/src/http/app.js';
import { parseClusterFile } from '../../../dispatcher/src/nodes/cluster-file.js';
import { parseMac, type Mac } from '../../../dispatcher/src/nodes/mac.js';
import { BootFiles } from '../../../dispatcher/src/boot/boot-files.js';
import { bootHttpPlugin } from '../../../dispatcher/src/boot/http/boot-routes.js';
import { ImageFiles } from '../../../dispatcher/src/boot/image-files.js';
import { bootServerRoutes } from '../../../dispatcher/src/api/boot-servers/routes.js';
import { BootServerRegistry, LOST_AFTER_HEARTBEATS } from '../../../dispatcher/src/boot-server/registry.js';
import { openStore } from '../../../dispatcher/src/store/database.js';
import { allMigrations } from '../../../dispatcher/src/store/migrations.js';
import { makeBootTree } from '../../lab/boot-tree.js';
import { tempDir } from '../agent/temp-dirs.js';

describe('BootServerRegistry', () => {
  it('keeps only a hash, authenticates by token, and forgets a removed one', () => {
    let t = 1_000_000;
    const db = openStore({ dataDir: ':memory:', migrations: allMigrations });
    const reg = new BootServerRegistry(
      db,
      () => 2000,
      () => t,
    );
    const a = reg.add('rack2');
    if ('error' in a) throw new Error(a.error);
    expect(a.token).toMatch(/^lcb_/);
    expect(JSON.stringify(db.prepare('SELECT * FROM boot_servers').all())).not.toContain(a.token);
    expect(reg.authenticate(a.token)).toBe('rack2');
    expect(reg.authenticate(`${a.token}x`)).toBeUndefined();
    expect(reg.authenticate(undefined)).toBeUndefined();
    expect(reg.add('rack2')).toEqual({ error: 'exists' });
    expect(reg.add('Rack 2')).toEqual({ error: 'bad-name' });

    expect(reg.list()[0]).toMatchObject({ name: 'rack2', state: 'never-seen', lastSeen: null });
    reg.seen('rack2', '10.9.0.2');
    expect(reg.list()[0]).toMatchObject({ state: 'online', address: '10.9.0.2', lastSeen: t });
    t += LOST_AFTER_HEARTBEATS * 2000 + 1;
    expect(reg.list()[0]!.state).toBe('lost');

    expect(reg.remove('rack2')).toBe(true);
    expect(reg.authenticate(a.token)).toBeUndefined();
    expect(reg.list()).toEqual([]);
  });
});

describe('forwarded client identity on the leader', () => {
  let core: Core;
  let app: FastifyInstance;
  let token: string;
  const MAC = '52:54:00:b5:00:07';
  const body = { mac: MAC, ip: '10.76.0.120', bootUrl: 'http://10.76.0.1:8080', leaderUrl: 'http://10.75.0.1:8080' };

  beforeAll(async () => {
    const tree = makeBootTree({ vmlinuz: 1000, 'initrd.img': 2000 });
    const config = resolveConfig({ dhcp: { mode: 'off' }, dataDir: tempDir('lc-bsreg-'), imageDir: tree.imageDir, pxeDir: tree.pxeDir });
    core = createCore({
      config,
      log: silentLogger(),
      cluster: parseClusterFile('enrollment: auto\n'),
      network: { name: undefined, ifindex: undefined, address: '10.75.0.1', netmask: '255.255.255.0', mac: undefined },
    });
    const files = new BootFiles({ imageDir: tree.imageDir, pxeDir: tree.pxeDir, log: silentLogger() });
    await files.loadAll();
    const imageFiles = new ImageFiles({ pxeDir: tree.pxeDir, log: silentLogger() });
    const http = bootHttpPlugin(core, { files, imageFiles, zeroCopy: false });
    const routes = bootServerRoutes(core, { http, imageFiles });
    app = await buildApp(core, [http, routes]);
    const r = routes.registry.add('rack2');
    if ('error' in r) throw new Error(r.error);
    token = r.token;
  });
  afterAll(async () => {
    await app?.close();
    if (core) closeCore(core);
  });

  const script = (authorization?: string) =>
    app.inject({
      method: 'POST',
      url: '/api/v1/boot-server/script',
      headers: authorization ? { authorization } : {},
      payload: body,
    });

  it.each([
    ['no token', undefined],
    ['the admin token', 'admin'],
    ['a made-up boot-server token', 'Bearer lcb_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'],
    ['a token of another kind', 'Bearer lce_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'],
  ])('refuses a script asked with %s, registering nothing', async (_, auth) => {
    const r = await script(auth === 'admin' ? `Bearer ${core.secrets.adminToken}` : auth);
    expect(r.statusCode).toBe(401);
    expect(r.json().error.code).toBe('DSP_ERR_BOOT_SERVER_TOKEN');
    expect(core.nodes.byMac(parseMac(MAC) as Mac)).toBeUndefined();
  });

  it('writes the script for a registered boot server: files and retries there, the agent to the leader', async () => {
    const r = await script(`Bearer ${token}`);
    expect(r.statusCode).toBe(200);
    const a = r.json() as { status: number; script: string; image: { image: string; version: string } };
    expect(a.status).toBe(200);
    expect(a.image.image).toBe('default');
    expect(a.script).toContain(
      `kernel --name vmlinuz http://10.76.0.1:8080/image/default/${a.image.version}/vmlinuz?mac=52-54-00-b5-00-07 `,
    );
    expect(a.script).toContain('lc.dispatcher=http://10.75.0.1:8080 ');
    expect(a.script).toContain('chain --autofree http://10.76.0.1:8080/boot.ipxe?mac=52-54-00-b5-00-07');
    expect(core.timeline.latest(parseMac(MAC) as Mac)).toMatchObject({
      stage: 'http.script',
      detail: { bootServer: 'rack2', ip: '10.76.0.120' },
    });

    const manifest = await app.inject({
      url: `/api/v1/boot-server/images/default/${a.image.version}`,
      headers: { authorization: `Bearer ${token}` },
    });
    expect(manifest.json().files.map((f: { name: string }) => f.name)).toEqual(['vmlinuz', 'initrd.img']);
    const noAuth = await app.inject({ url: `/api/v1/boot-server/files/default/${a.image.version}/vmlinuz` });
    expect(noAuth.statusCode).toBe(401);
  });

  it('takes forwarded boot stages of a boot server’s own services only', async () => {
    const r = await app.inject({
      method: 'POST',
      url: '/api/v1/boot-server/events',
      headers: { authorization: `Bearer ${token}` },
      payload: {
        events: [
          { mac: MAC, stage: 'tftp.sent', ts: 1, newBoot: false, detail: { file: 'undionly.kpxe' } },
          { mac: MAC, stage: 'agent.hello', ts: 2, newBoot: false, detail: null },
          { mac: MAC, stage: 'no.such.stage', ts: 3, newBoot: false, detail: null },
        ],
      },
    });
    expect(r.json()).toEqual({ recorded: 1, refused: 2 });
    const stages = core.timeline.list(parseMac(MAC) as Mac).map((s) => s.stage);
    expect(stages).toContain('tftp.sent');
    expect(stages).not.toContain('agent.hello');
  });
});
