/**
 * A small Redfish service for a QEMU machine, as sushy-tools is for libvirt: HTTPS with a
 * certificate signed by a CA made here (`makeTestCa`), HTTP Basic authentication, one
 * ComputerSystem whose PowerState is the QEMU machine's (no process: Off; QMP query-status)
 * and whose #ComputerSystem.Reset starts the machine (On), quits it through QMP (ForceOff),
 * resets it through QMP (ForceRestart) or quits and starts it again (PowerCycle).
 *
 *   const ca = makeTestCa(dir);
 *   const rf = await RedfishBmc.start({ name: 'node2', user: 'root', password: 'pw', tls: ca.server });
 *   // https://127.0.0.1:<rf.port>/redfish/v1/Systems/1, verified with ca.caFile
 *   await rf.stop();
 */
import { createServer, type Server } from 'node:https';
import { execFileSync } from 'node:child_process';
import { createConnection } from 'node:net';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { QemuMachine } from './qemu.js';

export interface TestCa {
  /** PEM of the CA, for the client's `ca`. */
  caFile: string;
  /** Key and certificate for 127.0.0.1, signed by the CA. */
  server: { key: Buffer; cert: Buffer };
}

/** A CA and a server certificate for 127.0.0.1 (openssl, in `dir`). */
export function makeTestCa(dir: string, cn = 'lilcluster test BMC CA'): TestCa {
  const p = (f: string) => join(dir, f);
  const ssl = (...a: string[]) => execFileSync('openssl', a, { stdio: ['ignore', 'ignore', 'pipe'] });
  ssl(
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    p('ca.key'),
    '-out',
    p('ca.pem'),
    '-days',
    '2',
    '-subj',
    `/CN=${cn}`,
  );
  ssl(
    'req',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    p('bmc.key'),
    '-out',
    p('bmc.csr'),
    '-subj',
    '/CN=127.0.0.1',
  );
  writeFileSync(p('san.ext'), 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n');
  ssl(
    'x509',
    '-req',
    '-in',
    p('bmc.csr'),
    '-CA',
    p('ca.pem'),
    '-CAkey',
    p('ca.key'),
    '-CAcreateserial',
    '-out',
    p('bmc.pem'),
    '-days',
    '2',
    '-extfile',
    p('san.ext'),
  );
  return { caFile: p('ca.pem'), server: { key: readFileSync(p('bmc.key')), cert: readFileSync(p('bmc.pem')) } };
}

/** One QMP command on a fresh connection: greeting, qmp_capabilities, the command, its answer. */
export function qmp(socket: string, execute: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const c = createConnection(socket);
    let buf = '';
    let step = 0;
    const timer = setTimeout(() => {
      c.destroy();
      reject(new Error(`QMP ${execute}: no answer`));
    }, 5_000);
    c.setEncoding('utf8');
    c.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    c.on('data', (d: string) => {
      buf += d;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const msg = JSON.parse(buf.slice(0, nl)) as Record<string, unknown>;
        buf = buf.slice(nl + 1);
        if ('event' in msg) continue;
        if (step === 0) c.write(`${JSON.stringify({ execute: 'qmp_capabilities' })}\n`);
        else if (step === 1) c.write(`${JSON.stringify({ execute })}\n`);
        else {
          clearTimeout(timer);
          c.end();
          if ('error' in msg) reject(new Error(`QMP ${execute}: ${JSON.stringify(msg.error)}`));
          else resolve(msg);
          return;
        }
        step++;
      }
    });
  });
}

export interface RedfishBmcOptions {
  name: string;
  user: string;
  password: string;
  tls: { key: Buffer; cert: Buffer };
  /** Default 127.0.0.1 (any 127.x address is loopback). */
  host?: string;
}

const SYSTEM = '/redfish/v1/Systems/1';
const RESET = `${SYSTEM}/Actions/ComputerSystem.Reset`;

export class RedfishBmc {
  port = 0;
  machine: QemuMachine | undefined;
  /** Requests seen (method and path), for tests that count calls. */
  readonly requests: string[] = [];
  readonly #dir: string;
  #server: Server | undefined;

  private constructor(readonly opts: RedfishBmcOptions) {
    this.#dir = mkdtempSync(join(tmpdir(), `lc-redfish-${opts.name}-`));
  }

  static async start(opts: RedfishBmcOptions): Promise<RedfishBmc> {
    const bmc = new RedfishBmc(opts);
    const server = createServer({ key: opts.tls.key, cert: opts.tls.cert }, (req, res) => {
      bmc.#handle(req, res).catch((e: Error) => send(res, 500, { error: { code: 'Base.1.0.GeneralError', message: e.message } }));
    });
    bmc.#server = server;
    await new Promise<void>((r) => server.listen(0, opts.host ?? '127.0.0.1', r));
    bmc.port = (server.address() as { port: number }).port;
    return bmc;
  }

  get on(): boolean {
    return this.machine?.running ?? false;
  }

  async #powerState(): Promise<string> {
    if (!this.machine?.running) return 'Off';
    const r = await qmp(this.#qmpSocket, 'query-status');
    const status = (r.return as { status?: string }).status;
    return status === 'running' ? 'On' : status === 'paused' ? 'Paused' : 'On';
  }

  get #qmpSocket(): string {
    return join(this.#dir, 'qmp.sock');
  }

  async #powerOn(): Promise<void> {
    if (this.machine?.running) return;
    this.machine = await QemuMachine.start({
      name: `${this.opts.name}-redfish`,
      boot: { kind: 'pxe' },
      nics: [{ net: { kind: 'user' }, rom: 'none' }],
      memoryMiB: 64,
      vga: false,
      consoleLog: join(this.#dir, 'console.log'),
      qmpSocket: this.#qmpSocket,
    });
  }

  async #powerOff(): Promise<void> {
    const m = this.machine;
    if (!m?.running) return;
    await qmp(this.#qmpSocket, 'quit').catch(() => undefined);
    await m.exited;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0]!.replace(/\/$/, '');
    this.requests.push(`${req.method} ${path}`);
    const body = await readBody(req);
    const expected = `Basic ${Buffer.from(`${this.opts.user}:${this.opts.password}`).toString('base64')}`;
    if (path !== '/redfish/v1' && req.headers.authorization !== expected)
      return send(res, 401, { error: { code: 'Base.1.0.InsufficientPrivilege', message: 'authentication required' } });
    if (req.method === 'GET' && path === '/redfish/v1')
      return send(res, 200, {
        '@odata.id': '/redfish/v1',
        Id: 'RootService',
        RedfishVersion: '1.6.0',
        Systems: { '@odata.id': '/redfish/v1/Systems' },
      });
    if (req.method === 'GET' && path === '/redfish/v1/Systems')
      return send(res, 200, { '@odata.id': '/redfish/v1/Systems', 'Members@odata.count': 1, Members: [{ '@odata.id': SYSTEM }] });
    if (req.method === 'GET' && path === SYSTEM)
      return send(res, 200, {
        '@odata.type': '#ComputerSystem.v1_10_0.ComputerSystem',
        '@odata.id': SYSTEM,
        Id: '1',
        Name: this.opts.name,
        PowerState: await this.#powerState(),
        Actions: {
          '#ComputerSystem.Reset': {
            target: RESET,
            'ResetType@Redfish.AllowableValues': ['On', 'ForceOff', 'ForceRestart', 'PowerCycle', 'GracefulShutdown'],
          },
        },
      });
    if (req.method === 'POST' && path === RESET) {
      let resetType: unknown;
      try {
        resetType = (JSON.parse(body) as { ResetType?: unknown }).ResetType;
      } catch {
        return send(res, 400, { error: { code: 'Base.1.0.MalformedJSON', message: 'body is not JSON' } });
      }
      switch (resetType) {
        case 'On':
          await this.#powerOn();
          break;
        case 'ForceOff':
          await this.#powerOff();
          break;
        case 'GracefulShutdown':
          if (this.on) await qmp(this.#qmpSocket, 'system_powerdown');
          break;
        case 'ForceRestart':
          if (this.on) await qmp(this.#qmpSocket, 'system_reset');
          else await this.#powerOn();
          break;
        case 'PowerCycle':
          await this.#powerOff();
          await this.#powerOn();
          break;
        default:
          return send(res, 400, { error: { code: 'Base.1.0.ActionParameterNotSupported', message: `ResetType ${String(resetType)}` } });
      }
      res.writeHead(204).end();
      return;
    }
    send(res, 404, { error: { code: 'Base.1.0.ResourceMissingAtURI', message: path } });
  }

  async stop(): Promise<void> {
    await this.machine?.stop();
    this.#server?.closeAllConnections();
    await new Promise((r) => this.#server?.close(r) ?? r(undefined));
    rmSync(this.#dir, { recursive: true, force: true });
  }
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res
    .writeHead(status, { 'content-type': 'application/json', 'odata-version': '4.0', 'content-length': Buffer.byteLength(text) })
    .end(text);
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let s = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => {
      s += d;
      if (s.length > 64 * 1024) req.destroy(new Error('body too large'));
    });
    req.on('end', () => resolve(s));
    req.on('error', reject);
  });
}
