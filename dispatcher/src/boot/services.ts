/**
 * The boot chain's services on one core: the boot files (held in memory, shared), TFTP, the
 * HTTP boot routes and the boot timeline API. server.ts starts them with one call.
 */
import type { Core } from '../core.js';
import type { AppPlugin } from '../http/app.js';
import { BootFiles, IMAGE_FILES, OPTIONAL_IMAGE_FILES, PXE_FILES } from './boot-files.js';
import { ClientMacLookup } from './client-mac.js';
import { bootHttpPlugin, type BootHttp, type BootHttpOptions } from './http/boot-routes.js';
import { bootsApiPlugin } from '../api/boots/routes.js';
import { startTftp, type RunningTftp } from '../tftp/server.js';
import { ImageFiles } from './image-files.js';

export interface BootServices {
  files: BootFiles;
  /** Every image version's files (boot scripts and kexec plans point at them). */
  imageFiles: ImageFiles;
  tftp: RunningTftp | undefined;
  http: BootHttp;
  /** Fastify plugins to register on the app. */
  plugins: AppPlugin[];
  stop(): Promise<void>;
}

export async function startBootServices(
  core: Core,
  opts: Pick<BootHttpOptions, 'liveNodes' | 'imageSource' | 'scriptSource'> = {},
): Promise<BootServices> {
  const log = core.log.child({ svc: 'boot' });
  const files = new BootFiles({ imageDir: core.config.imageDir, pxeDir: core.config.pxeDir, log });
  const { missing } = await files.loadAll();
  const pxeMissing = missing.filter((n) => (PXE_FILES as readonly string[]).includes(n));
  const imageMissing = missing.filter(
    (n) => (IMAGE_FILES as readonly string[]).includes(n) && !(OPTIONAL_IMAGE_FILES as readonly string[]).includes(n),
  );
  if (pxeMissing.length)
    log.warn(
      { missing: pxeMissing, pxeDir: core.config.pxeDir },
      'iPXE first stages missing: PXE clients asking for them get a TFTP error; run `make pxe`',
    );
  // A boot server's image files come from its cache, not from an image folder.
  if (imageMissing.length && !opts.imageSource)
    log.warn(
      { missing: imageMissing, imageDir: core.config.imageDir },
      'RAM image missing: machines cannot boot until it exists; run `make image`',
    );
  const macs = new ClientMacLookup(core.nodes);
  const tftp = core.config.tftp ? await startTftp(core, { files, macs }) : undefined;
  const imageFiles = new ImageFiles({ pxeDir: core.config.pxeDir, log });
  const http = bootHttpPlugin(core, { files, imageFiles, macs, ...opts });
  registerMetrics(core, tftp, http);
  return {
    files,
    imageFiles,
    tftp,
    http,
    plugins: [http, bootsApiPlugin(core)],
    async stop() {
      await tftp?.stop();
    },
  };
}

/** The boot services' counters at /metrics, read at scrape time. */
function registerMetrics(core: Core, tftp: RunningTftp | undefined, http: BootHttp): void {
  const m = core.metrics;
  if (tftp) {
    m.collect({
      name: 'lilcluster_tftp_transfers_total',
      help: 'TFTP requests by outcome',
      type: 'counter',
      labelNames: ['outcome'],
      collect: () => {
        const c = tftp.counters();
        return [
          { labels: { outcome: 'completed' }, value: c.completed },
          { labels: { outcome: 'failed' }, value: c.failed },
          { labels: { outcome: 'size_probe' }, value: c.sizeProbes },
          { labels: { outcome: 'refused' }, value: c.refused },
          { labels: { outcome: 'busy' }, value: c.busy },
          { labels: { outcome: 'abandoned' }, value: c.abandoned },
          { labels: { outcome: 'malformed' }, value: c.malformed },
        ];
      },
    });
    m.collect({
      name: 'lilcluster_tftp_sent_bytes_total',
      help: 'TFTP file bytes sent in completed transfers',
      type: 'counter',
      collect: () => tftp.counters().bytesSent,
    });
    m.collect({
      name: 'lilcluster_tftp_transfers',
      help: 'TFTP transfers running or waiting for a slot',
      type: 'gauge',
      labelNames: ['state'],
      collect: () => [
        { labels: { state: 'active' }, value: tftp.counters().active },
        { labels: { state: 'queued' }, value: tftp.counters().queued },
      ],
    });
  }
  m.collect({
    name: 'lilcluster_http_boot_requests_total',
    help: 'HTTP boot scripts and image downloads by outcome',
    type: 'counter',
    labelNames: ['kind', 'outcome'],
    collect: () => {
      const c = http.counters();
      return [
        { labels: { kind: 'script', outcome: 'served' }, value: c.scripts },
        { labels: { kind: 'script', outcome: 'refused' }, value: c.refusedScripts },
        { labels: { kind: 'file', outcome: 'completed' }, value: c.completed },
        { labels: { kind: 'file', outcome: 'failed' }, value: c.failed },
        { labels: { kind: 'file', outcome: 'not_modified' }, value: c.notModified },
      ];
    },
  });
  m.collect({
    name: 'lilcluster_http_boot_sent_bytes_total',
    help: 'boot file bytes sent over HTTP in completed downloads',
    type: 'counter',
    collect: () => http.counters().bytesSent,
  });
  m.collect({
    name: 'lilcluster_http_boot_downloads',
    help: 'HTTP boot downloads running or waiting for a slot',
    type: 'gauge',
    labelNames: ['state'],
    collect: () => [
      { labels: { state: 'active' }, value: http.counters().active },
      { labels: { state: 'queued' }, value: http.counters().queued },
    ],
  });
}
