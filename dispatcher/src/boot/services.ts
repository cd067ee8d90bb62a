/**
 * The boot chain's services on one core: the boot files (held in memory, shared), TFTP, the
 * HTTP boot routes and the boot timeline API. server.ts starts them with one call.
 */
import type { Core } from '../core.js';
import type { AppPlugin } from '../http/app.js';
import { BootFiles, IMAGE_FILES, PXE_FILES } from './boot-files.js';
import { ClientMacLookup } from './client-mac.js';
import { bootHttpPlugin, type BootHttp } from './http/boot-routes.js';
import { bootsApiPlugin } from './http/boots-api.js';
import { startTftp, type RunningTftp } from '../tftp/server.js';

export interface BootServices {
  files: BootFiles;
  tftp: RunningTftp | undefined;
  http: BootHttp;
  /** Fastify plugins to register on the app. */
  plugins: AppPlugin[];
  stop(): Promise<void>;
}

export async function startBootServices(core: Core): Promise<BootServices> {
  const log = core.log.child({ svc: 'boot' });
  const files = new BootFiles({ imageDir: core.config.imageDir, pxeDir: core.config.pxeDir, log });
  const { missing } = await files.loadAll();
  const pxeMissing = missing.filter((n) => (PXE_FILES as readonly string[]).includes(n));
  const imageMissing = missing.filter((n) => (IMAGE_FILES as readonly string[]).includes(n));
  if (pxeMissing.length)
    log.warn({ missing: pxeMissing, pxeDir: core.config.pxeDir }, 'iPXE first stages missing: PXE clients asking for them get a TFTP error; run `make pxe`');
  if (imageMissing.length)
    log.warn({ missing: imageMissing, imageDir: core.config.imageDir }, 'RAM image missing: machines cannot boot until it exists; run `make image`');
  const macs = new ClientMacLookup(core.nodes);
  const tftp = core.config.tftp ? await startTftp(core, { files, macs }) : undefined;
  const http = bootHttpPlugin(core, { files, macs });
  return {
    files,
    tftp,
    http,
    plugins: [http, bootsApiPlugin(core)],
    async stop() {
      await tftp?.stop();
    },
  };
}
