/**
 * HTTP boot on :8080, the second half of the boot chain:
 *
 *   GET /boot.ipxe?mac=<mac>       iPXE script for that machine (also /boot/<mac>[.ipxe])
 *   GET|HEAD /image/<name>/<version>/vmlinuz     an image version's kernel  } from memory, with
 *   GET|HEAD /image/<name>/<version>/initrd.img  its base initrd            } Range, ETag,
 *   GET|HEAD /image/<name>/<version>/root.cpio   its root, when it has one  } If-None-Match, If-Range
 *   GET|HEAD /image/<file>         the newest build of the default image (tools, benchmarks)
 *   GET|HEAD /pxe/<ipxe binary>    first stages for UEFI HTTP boot clients
 *
 * The script boots the image and version the node is given (images/assignment.ts: its image,
 * that image's release or the node's rollout pin) and names it on the kernel command line
 * (`lc.image=`), so the agent's hello says what really booted.
 * The boot script registers the machine (enrollment policy), issues a fresh per-boot token
 * bound to its MAC and records `http.script`; image downloads record `http.kernel` /
 * `http.initrd` / `http.root` (or `http.failed`) with bytes and duration. Image transfers are bounded
 * (a fair queue: a few at once per client address, the rest of its requests wait their turn)
 * so a boot storm waits rather than failing, and a download that makes no progress for
 * `bootHttpIdleSeconds` is dropped, so stalled readers cannot hold the slots. Bodies go by
 * sendfile(2) through the native addon when it is built (sendfile.ts), else through Node
 * (said once at start).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Core } from '../../core.js';
import type { AppPlugin } from '../../http/app.js';
import { RateLimitedLog, type Logger } from '../../log.js';
import { parseMac, type Mac } from '../../nodes/mac.js';
import type { BootStage } from '../timeline.js';
import { type BootFiles, IMAGE_FILES, PXE_FILES, type BootFileName } from '../boot-files.js';
import { ClientMacLookup, plainIPv4, type ClientMacSource } from '../client-mac.js';
import { FairLimiter } from '../limiter.js';
import { recordStage } from '../record-stage.js';
import { bootScript, refusedScript, unidentifiedScript } from '../ipxe-script.js';
import { bootOriginRefusal, NodeNetworkGate } from '../../trust/boot-origin.js';
import { serveBootFile } from './serve-bytes.js';
import { IMAGE_NAME_RE, VERSION_RE, versionLabel, type ImageVersion } from '../../images/catalog.js';
import { ImageFiles } from '../image-files.js';
import { imageUrl } from '../kexec-plan.js';
import { memoryRefusal } from '../memory-fit.js';
import { loadSendfile, SENDFILE_MIN_BYTES, type ZeroCopySender } from './sendfile.js';

/** Downloads waiting for a slot; beyond this the client gets 503 and its script retries. */
export const DEFAULT_HTTP_MAX_QUEUE = 4096;
/** Downloads one client address may have waiting; beyond this that client gets 503. */
export const DEFAULT_HTTP_PER_CLIENT_QUEUE = 64;

export interface BootHttpOptions {
  /** The PXE first stages and the default image's newest build (flat /image/<file>). */
  files: BootFiles;
  /** Every image version's files (/image/<name>/<version>/<file>); default: its own. */
  imageFiles?: ImageFiles;
  /**
   * Whether a request came in on the node network (by the socket's local address); default
   * the node network's addresses (trust/boot-origin.ts). Boot scripts are 404 elsewhere.
   */
  nodeNetwork?: Pick<NodeNetworkGate, 'admits'>;
  /** Whether a live agent holds a MAC's session (the agent hub); a new boot script must not end it. */
  liveNodes?: { holdsSession(mac: Mac): boolean };
  macs?: ClientMacSource;
  maxTransfers?: number;
  maxQueue?: number;
  /** Downloads one client address runs at once (default: config bootHttpPerClient). */
  perClient?: number;
  /**
   * How image bodies are sent: a ZeroCopySender (sendfile), false (always through Node), or
   * undefined: the native addon if it loads (LC_SENDFILE=0 turns it off), else through Node.
   */
  zeroCopy?: ZeroCopySender | false;
  /**
   * A boot server of another segment (boot-server/): image versions' files come from its
   * cache, filled from the leader, and boot scripts from the leader. Default: this
   * dispatcher's catalog, and scripts made here.
   */
  imageSource?: (image: string, version: string) => Promise<BootFileSource | undefined>;
  scriptSource?: (req: { mac: Mac; ip: string; dispatcherUrl: string }) => Promise<{ status: number; text: string }>;
}

/** Where a version's files are read from: its folder (BootFiles), or a boot server's cache. */
export type BootFileSource = Pick<BootFiles, 'get' | 'pathOf'> & { missingHint?: string };

/** The URLs a boot script names: its own (retries, image files) and the agent's dispatcher. */
export interface ScriptUrls {
  /** Where the script asks again and the image files are: this dispatcher, or a boot server. */
  base: string;
  /** `lc.dispatcher=`: where the node's agent connects (default `base`). */
  agentUrl?: string;
  /** The boot server the request came through (boot timeline, log). */
  via?: string;
}

export interface IssuedScript {
  status: 200;
  text: string;
  /** The image version the script boots; absent when refused. */
  version?: ImageVersion;
}

export interface BootHttpCounters {
  scripts: number;
  refusedScripts: number;
  downloads: number;
  completed: number;
  failed: number;
  notModified: number;
  bytesSent: number;
  /** Downloads whose body went by sendfile (zero-copy); the others went through Node. */
  sentZeroCopy: number;
  active: number;
  queued: number;
}

export interface BootHttp extends AppPlugin {
  counters(): BootHttpCounters;
  /**
   * The script for a machine already placed where it asks from (by this dispatcher's checks,
   * or by a registered boot server's): live session, enrollment, image, memory, token.
   */
  issueScript(mac: Mac, ip: string, urls: ScriptUrls): Promise<IssuedScript>;
}

const STAGE_OF: Partial<Record<BootFileName, BootStage>> = {
  vmlinuz: 'http.kernel',
  'initrd.img': 'http.initrd',
  'root.cpio': 'http.root',
};

export function bootHttpPlugin(core: Core, opts: BootHttpOptions): BootHttp {
  const log = core.log.child({ svc: 'http-boot' });
  const noisy = new RateLimitedLog(log);
  const macs = opts.macs ?? new ClientMacLookup(core.nodes);
  for (const img of core.images.catalog.list()) {
    const newest = img.versions.at(-1)!;
    if (newest.keyStatus === 'other')
      log.warn(
        { image: img.name, dir: newest.dir },
        `image ${img.name} carries another dispatcher's key: its agents will refuse this dispatcher; rebuild it with make image DISPATCHER_KEY=<data-dir>/identity.pub`,
      );
  }
  if (core.images.catalog.list().some((img) => img.versions.at(-1)!.keyStatus === 'none'))
    log.info({}, 'an image carries no dispatcher key: boot scripts pass it as lc.pubkey= (bake it in with make image DISPATCHER_KEY=...)');
  const limiter = new FairLimiter({
    max: opts.maxTransfers ?? core.config.bootHttpMaxTransfers,
    maxQueue: opts.maxQueue ?? DEFAULT_HTTP_MAX_QUEUE,
    perClient: opts.perClient ?? core.config.bootHttpPerClient,
    perClientQueue: DEFAULT_HTTP_PER_CLIENT_QUEUE,
  });
  const idleTimeoutMs = Math.round(core.config.bootHttpIdleSeconds * 1000);
  const c = { scripts: 0, refusedScripts: 0, downloads: 0, completed: 0, failed: 0, notModified: 0, bytesSent: 0, sentZeroCopy: 0 };
  const zeroCopy = pickZeroCopy(opts.zeroCopy, log, idleTimeoutMs);
  const imageFiles = opts.imageFiles ?? new ImageFiles({ pxeDir: core.config.pxeDir, log });
  // Each file's memfd is made when its version loads, not by the first download of a storm.
  if (zeroCopy) {
    const prepare = (f: { size: number; bytes: Buffer }) => {
      if (f.size >= SENDFILE_MIN_BYTES) zeroCopy.prepare(f.bytes);
    };
    opts.files.onLoaded(prepare);
    imageFiles.onLoaded(prepare);
  }

  const dispatcherUrl = (req: FastifyRequest): string => {
    const port = core.config.httpPort || req.raw.socket?.localPort || 80;
    return `http://${core.network.address}:${port}`;
  };

  /** The machine behind a request: the URL's MAC if we know that machine, else its IP's. */
  const machineOf = (req: FastifyRequest): Mac | undefined => {
    const q = (req.query as Record<string, unknown> | undefined)?.mac;
    const fromUrl = typeof q === 'string' ? parseMac(q) : undefined;
    if (fromUrl && core.nodes.byMac(fromUrl)) return fromUrl;
    return macs.macOf(req.ip);
  };

  const nodeNetwork = opts.nodeNetwork ?? new NodeNetworkGate(core.network);
  // A live node's retry comes once the hub would have declared it lost.
  const liveRetrySeconds = Math.ceil(core.config.heartbeatSeconds * core.config.missedHeartbeats) + 1;

  const serveScript = async (req: FastifyRequest, reply: FastifyReply, macText: string | undefined) => {
    const ip = plainIPv4(req.ip);
    const localAddress = req.raw.socket?.localAddress;
    if (!nodeNetwork.admits(localAddress)) {
      // Not on the node network: boot scripts do not exist here.
      c.refusedScripts++;
      noisy.warn(
        `offnet:${ip}`,
        { ip, mac: String(macText ?? '').slice(0, 40), localAddress },
        'boot script asked for off the node network: 404',
      );
      return reply.code(404).send({
        error: {
          code: 'DSP_ERR_NOT_FOUND',
          message: 'no boot scripts on this address',
          hint: `boot scripts are served on the node network (${core.network.address})`,
        },
      });
    }
    const base = dispatcherUrl(req);
    reply.header('content-type', 'text/plain; charset=utf-8').header('cache-control', 'no-store');
    const mac = macText === undefined ? undefined : parseMac(macText);
    if (!mac) {
      c.refusedScripts++;
      const why = macText === undefined ? 'the boot URL carries no MAC address' : `"${String(macText).slice(0, 40)}" is not a MAC address`;
      noisy.warn(`nomac:${ip}`, { ip, mac: String(macText ?? '').slice(0, 40) }, 'boot script without a usable MAC');
      return reply.send(unidentifiedScript({ dispatcherUrl: base, reason: `${why}; expected /boot.ipxe?mac=<mac>` }));
    }
    const origin = bootOriginRefusal({ localAddress, peer: ip, mac }, nodeNetwork, {
      mode: core.config.dhcp.mode,
      seen: core.bootAddresses.of(mac),
    });
    if (origin) {
      c.refusedScripts++;
      noisy.warn(`origin:${ip}`, { mac, ip, why: origin.why }, 'boot script refused: not where this MAC booted');
      return reply.code(origin.status).send(refusedScript({ mac, dispatcherUrl: base, reason: origin.why }));
    }
    if (!opts.scriptSource) {
      const r = await issueScript(mac, ip, { base });
      return reply.code(r.status).send(r.text);
    }
    // A boot server: the leader decides and writes the script (boot-server/leader-client.ts).
    const r = await opts.scriptSource({ mac, ip, dispatcherUrl: base });
    if (r.status === 200) c.scripts++;
    else c.refusedScripts++;
    return reply.code(r.status).send(r.text);
  };

  const issueScript = async (mac: Mac, ip: string, urls: ScriptUrls): Promise<IssuedScript> => {
    const t0 = performance.now();
    const base = urls.base;
    const via = urls.via ? { bootServer: urls.via } : {};
    const refuse = (reason: string, retrySeconds?: number): IssuedScript => {
      c.refusedScripts++;
      return {
        status: 200,
        text: refusedScript({ mac, dispatcherUrl: base, reason, ...(retrySeconds !== undefined ? { retrySeconds } : {}) }),
      };
    };
    if (opts.liveNodes?.holdsSession(mac)) {
      // A second machine claiming a live node's MAC (or a script fetched by hand) must not end
      // that node's session; a node that really rebooted is lost within seconds and served then.
      noisy.warn(
        `live:${ip}`,
        { mac, ip, node: core.nodes.byMac(mac)?.name, ...via },
        'boot script refused: the node of this MAC is connected',
      );
      return refuse('its node is connected; asking again shortly', liveRetrySeconds);
    }
    const decision = core.nodes.admit(mac);
    if (decision.kind === 'deny') {
      noisy.warn(decision.capped ? 'deny:capped' : `deny:${mac}`, { mac, ip, reason: decision.reason, ...via }, 'boot refused');
      return refuse(decision.reason);
    }
    const node = decision.node;
    const next = core.images.assignments.next(node);
    if (!next.ok) {
      noisy.warn(
        `noimage:${next.image}`,
        { mac, node: node.name, image: next.image, reason: next.reason },
        'boot refused: no image to give',
      );
      recordStage(core.timeline, log, mac, 'http.script', { ip, node: node.name, refused: `${next.reason}; ${next.hint}`, ...via });
      return refuse(`${next.reason}: ${next.hint}`);
    }
    const v = next.version;
    const tooBig = memoryRefusal(v, node, core.config.kernelArgs);
    if (tooBig) {
      noisy.warn(
        `toobig:${mac}`,
        { mac, node: node.name, image: versionLabel(v), reason: tooBig },
        'boot refused: image larger than the node',
      );
      recordStage(core.timeline, log, mac, 'http.script', { ip, node: node.name, image: versionLabel(v), refused: tooBig, ...via });
      return refuse(tooBig);
    }
    // Durable before the script leaves, sharing one commit with the other scripts of a storm.
    const token = await core.bootTokens.issueGrouped(mac, core.commits);
    core.nodes.recordBoot(mac, { imageVersion: versionLabel(v) });
    const text = bootScript({
      mac,
      nodeName: node.name,
      dispatcherUrl: urls.agentUrl ?? base,
      peers: core.config.peers,
      bootUrl: base,
      token,
      kernelArgs: core.config.kernelArgs,
      pubkeyB64: v.keyStatus === 'ours' ? null : core.secrets.identity.publicKeyB64,
      pending: decision.kind === 'pending',
      withRoot: v.hasRoot,
      image: versionLabel(v),
      imageUrl: imageUrl(base, v),
    });
    c.scripts++;
    const bytes = Buffer.byteLength(text);
    const durationMs = Math.round(performance.now() - t0);
    log.info({ mac, node: node.name, ip, pending: decision.kind === 'pending', ...via }, 'boot script served');
    recordStage(core.timeline, log, mac, 'http.script', {
      ip,
      node: node.name,
      image: versionLabel(v),
      bytes,
      durationMs,
      ...(decision.kind === 'pending' ? { pending: true } : {}),
      ...via,
    });
    return { status: 200, text, version: v };
  };

  const serveFile = async (req: FastifyRequest, reply: FastifyReply, name: BootFileName, from: BootFileSource = opts.files) => {
    const file = await from.get(name);
    if (!file) {
      const hint =
        from.missingHint ??
        ((PXE_FILES as readonly string[]).includes(name) ? 'run `make pxe` on the dispatcher' : 'run `make image` on the dispatcher');
      noisy.warn(`missing:${name}`, { file: name, path: from.pathOf(name) }, 'boot file requested but missing');
      return reply.code(404).send({ error: { code: 'DSP_ERR_NOT_FOUND', message: `${name} is not available`, hint } });
    }
    reply.hijack();
    const raw = req.raw;
    const res = reply.raw;
    if (raw.method === 'HEAD') {
      await serveBootFile(raw, res, file); // headers only: no need to wait in line
      return;
    }
    c.downloads++;
    const mac = machineOf(req);
    // Read now: once the client has gone the socket no longer knows its peer.
    const ip = plainIPv4(req.ip);
    const queuedAt = performance.now();
    await new Promise<void>((resolve) => {
      const submitted = limiter.submit((release) => {
        if (res.destroyed) {
          release();
          return resolve();
        }
        const queuedMs = Math.round(performance.now() - queuedAt);
        serveBootFile(raw, res, file, { zeroCopy, idleTimeoutMs }).then((r) => {
          release();
          account(name, mac, ip, r, queuedMs);
          resolve();
        });
      }, ip);
      if (!submitted) {
        noisy.warn(
          `busy:${ip}`,
          { file: name, ip, mac, queued: limiter.queued },
          "HTTP boot queue full (or this client's line); client told to retry",
        );
        res.writeHead(503, { 'retry-after': '5', 'content-length': 0 });
        res.end();
        return resolve();
      }
      res.once('close', () => {
        submitted.cancel();
        resolve();
      });
    });
  };

  const account = (
    name: BootFileName,
    mac: Mac | undefined,
    ip: string,
    r: Awaited<ReturnType<typeof serveBootFile>>,
    queuedMs: number,
  ) => {
    const stage = STAGE_OF[name] ?? 'http.firststage';
    if (r.status === 304) c.notModified++;
    if (r.status !== 200 && r.status !== 206) return; // 304/412/416: nothing was downloaded
    if (r.via === 'sendfile') c.sentZeroCopy++;
    if (r.completed) {
      c.completed++;
      c.bytesSent += r.bodyBytes;
      log.info({ file: name, mac, ip, status: r.status, bytes: r.bodyBytes, durationMs: r.durationMs, queuedMs, via: r.via }, 'file sent');
      if (mac)
        recordStage(core.timeline, log, mac, stage, { file: name, ip, status: r.status, bytes: r.bodyBytes, durationMs: r.durationMs });
    } else {
      // How much of the body reached the client is not known here (the whole slice was
      // queued on the socket at once): the size and the time say how far it got. Keyed by
      // client: a crowd of stalled readers from one address must not flood the log.
      c.failed++;
      const stalled = r.error === 'ETIMEDOUT';
      noisy.warn(
        `aborted:${ip}`,
        {
          file: name,
          mac,
          ip,
          size: r.bodyBytes,
          durationMs: r.durationMs,
          via: r.via,
          error: r.error,
          ...(stalled ? { idleTimeoutMs } : {}),
        },
        stalled ? 'download dropped: the client read nothing for the idle timeout' : 'download aborted by the client',
      );
      if (mac)
        recordStage(core.timeline, log, mac, 'http.failed', {
          file: name,
          ip,
          size: r.bodyBytes,
          durationMs: r.durationMs,
          reason: 'connection closed before the end',
        });
    }
  };

  const versionOf = (image: string, version: string): ImageVersion | undefined =>
    IMAGE_NAME_RE.test(image) && VERSION_RE.test(version) ? core.images.catalog.version(image, version) : undefined;

  async function plugin(app: FastifyInstance): Promise<void> {
    // A HEAD of a script would issue (and so revoke) a token: scripts are GET only.
    app.get('/boot.ipxe', { exposeHeadRoute: false }, (req, reply) => serveScript(req, reply, queryMac(req)));
    app.get('/boot/:ref', { exposeHeadRoute: false }, (req, reply) =>
      serveScript(req, reply, (req.params as { ref: string }).ref.replace(/\.ipxe$/, '')),
    );
    for (const name of IMAGE_FILES) app.get(`/image/${name}`, (req, reply) => serveFile(req, reply, name));
    app.get('/image/:image/:version/:file', async (req, reply) => {
      const p = req.params as { image: string; version: string; file: string };
      const known = IMAGE_NAME_RE.test(p.image) && VERSION_RE.test(p.version) && (IMAGE_FILES as readonly string[]).includes(p.file);
      const v = known && !opts.imageSource ? versionOf(p.image, p.version) : undefined;
      const from = !known ? undefined : opts.imageSource ? await opts.imageSource(p.image, p.version) : v && imageFiles.of(v);
      if (!from)
        return reply.code(404).send({
          error: {
            code: 'DSP_ERR_NOT_FOUND',
            message: `no image file ${p.image.slice(0, 64)}/${p.version.slice(0, 64)}/${p.file.slice(0, 64)}`,
            hint: 'dispatcherctl images lists the images and versions served',
          },
        });
      return serveFile(req, reply, p.file as BootFileName, from);
    });
    app.get('/pxe/:file', (req, reply) => {
      const file = (req.params as { file: string }).file;
      if (!(PXE_FILES as readonly string[]).includes(file))
        return reply.code(404).send({
          error: {
            code: 'DSP_ERR_NOT_FOUND',
            message: `no first stage named ${file.slice(0, 40)}`,
            hint: `one of ${PXE_FILES.join(', ')}`,
          },
        });
      return serveFile(req, reply, file as BootFileName);
    });
  }
  return {
    name: 'boot-http',
    plugin,
    counters: () => ({ ...c, active: limiter.active, queued: limiter.queued }),
    issueScript,
  };
}

/** The sender for image bodies, said once in the log at start. */
function pickZeroCopy(opt: ZeroCopySender | false | undefined, log: Logger, idleTimeoutMs: number): ZeroCopySender | undefined {
  if (opt === false) return undefined;
  if (opt) return opt;
  const loaded = loadSendfile({ idleTimeoutMs });
  if (loaded.sender) log.info({ addon: loaded.path }, 'image downloads by sendfile (zero-copy)');
  else log.warn({ reason: loaded.reason }, 'image downloads through Node (no zero-copy sendfile)');
  return loaded.sender;
}

function queryMac(req: FastifyRequest): string | undefined {
  const q = (req.query as Record<string, unknown> | undefined)?.mac;
  return typeof q === 'string' ? q : Array.isArray(q) && typeof q[0] === 'string' ? q[0] : undefined;
}
