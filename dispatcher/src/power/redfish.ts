/**
 * Redfish (DMTF) over HTTPS: the first ComputerSystem of /redfish/v1/Systems, its PowerState,
 * and its #ComputerSystem.Reset action. HTTP Basic authentication, one request at a time.
 *
 * Certificates are checked against the system's CAs, or the `ca` file the cluster file names
 * for this BMC; `verify: false` turns checking off only when the cluster file says so.
 */
import { request } from 'node:https';
import { readFileSync } from 'node:fs';
import {
  BmcFailure,
  bmcLabel,
  readPassword,
  splitAddress,
  type BmcDriver,
  type BmcSpec,
  type PowerAction,
  type PowerState,
} from './bmc.js';

const REDFISH_PORT = 443;
/** A Redfish resource is a few KiB; more is not an answer we read. */
const MAX_BODY = 1024 * 1024;

/** Our action → the ResetType values to try, in order of preference (BMCs list what they allow). */
const RESET_TYPES: Record<PowerAction, string[]> = {
  on: ['On'],
  off: ['ForceOff'],
  cycle: ['PowerCycle', 'ForceRestart'],
  reset: ['ForceRestart', 'GracefulRestart'],
};

export class RedfishDriver implements BmcDriver {
  readonly #ca: Buffer | undefined;
  #system: string | undefined;

  constructor(private readonly bmc: BmcSpec) {
    this.#ca = bmc.ca ? readFileSync(bmc.ca) : undefined;
  }

  async status(signal: AbortSignal): Promise<PowerState> {
    const sys = await this.#get(await this.#systemPath(signal), signal);
    return parsePowerState(sys);
  }

  async act(action: PowerAction, signal: AbortSignal): Promise<void> {
    const sys = await this.#get(await this.#systemPath(signal), signal);
    const { target, allowed } = parseResetAction(sys);
    const wanted = RESET_TYPES[action];
    const resetType = allowed ? wanted.find((t) => allowed.includes(t)) : wanted[0];
    if (!resetType)
      throw new BmcFailure('refused', `${bmcLabel(this.bmc)} offers no reset for power ${action} (it allows ${allowed!.join(', ')})`);
    await this.#call('POST', target, signal, { ResetType: resetType });
  }

  async #systemPath(signal: AbortSignal): Promise<string> {
    this.#system ??= parseFirstMember(await this.#get('/redfish/v1/Systems', signal));
    return this.#system;
  }

  #get(path: string, signal: AbortSignal): Promise<unknown> {
    return this.#call('GET', path, signal);
  }

  #call(method: 'GET' | 'POST', path: string, signal: AbortSignal, body?: unknown): Promise<unknown> {
    const who = bmcLabel(this.bmc);
    const { host, port } = splitAddress(this.bmc.address, REDFISH_PORT);
    const auth = `Basic ${Buffer.from(`${this.bmc.user}:${readPassword(this.bmc)}`).toString('base64')}`;
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(new BmcFailure('timeout', `${who} did not answer in time`));
      const req = request(
        {
          host,
          port,
          path,
          method,
          signal,
          ...(this.#ca ? { ca: this.#ca } : {}),
          rejectUnauthorized: this.bmc.verify !== false,
          headers: {
            authorization: auth,
            accept: 'application/json',
            'odata-version': '4.0',
            ...(payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > MAX_BODY) {
              res.destroy();
              reject(new BmcFailure('refused', `${who}: answer to ${method} ${path} over ${MAX_BODY} bytes`));
            } else chunks.push(c);
          });
          res.on('end', () => {
            const status = res.statusCode ?? 0;
            const text = Buffer.concat(chunks).toString('utf8');
            if (status === 401 || status === 403)
              return reject(
                new BmcFailure('auth', `${who} refused the credentials of user ${JSON.stringify(this.bmc.user)} (HTTP ${status})`),
              );
            if (status < 200 || status > 299)
              return reject(new BmcFailure('refused', `${who}: ${method} ${path}: HTTP ${status}${redfishMessage(text)}`));
            if (!text.trim()) return resolve(null);
            try {
              resolve(JSON.parse(text));
            } catch {
              reject(new BmcFailure('refused', `${who}: ${method} ${path}: the answer is not JSON`));
            }
          });
          res.on('error', (e) => reject(new BmcFailure('refused', `${who}: ${e.message}`)));
        },
      );
      req.on('error', (e: NodeJS.ErrnoException) => {
        if (signal.aborted || e.name === 'AbortError') return reject(new BmcFailure('timeout', `${who} did not answer in time`));
        if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/i.test(e.code ?? ''))
          return reject(
            new BmcFailure(
              'tls',
              `${who}: its certificate did not verify (${e.code}); give the CA that signed it as ca:, or verify: false in the cluster file`,
            ),
          );
        reject(
          new BmcFailure(e.code === 'ECONNREFUSED' || e.code === 'EHOSTUNREACH' ? 'timeout' : 'refused', `${who}: ${e.code ?? e.message}`),
        );
      });
      req.end(payload);
    });
  }
}

type Json = Record<string, unknown>;
const isObj = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The first member of a Redfish collection (its @odata.id, a path under /redfish/v1/). */
export function parseFirstMember(collection: unknown): string {
  const members = isObj(collection) ? collection.Members : undefined;
  const first = Array.isArray(members) ? members[0] : undefined;
  const id = isObj(first) ? first['@odata.id'] : undefined;
  if (typeof id !== 'string' || !/^\/redfish\/v1\/[\x21-\x7e]{1,500}$/.test(id))
    throw new BmcFailure('refused', 'the Systems collection has no member with an @odata.id under /redfish/v1/');
  return id;
}

/** ComputerSystem.PowerState → on/off; transitional states count as where they are heading. */
export function parsePowerState(system: unknown): PowerState {
  const s = isObj(system) ? system.PowerState : undefined;
  switch (s) {
    case 'On':
    case 'PoweringOn':
    case 'Paused':
      return 'on';
    case 'Off':
    case 'PoweringOff':
      return 'off';
    case undefined:
    case null:
      return 'unknown';
    default:
      // JSON.stringify, not String(): a parsed object may carry a `toString` that is no function.
      throw new BmcFailure('refused', `unexpected PowerState ${(JSON.stringify(s) ?? '').slice(0, 40)}`);
  }
}

/** Actions["#ComputerSystem.Reset"]: its target and, when the BMC lists them, the allowed ResetType values. */
export function parseResetAction(system: unknown): { target: string; allowed: string[] | null } {
  const actions = isObj(system) ? system.Actions : undefined;
  const reset = isObj(actions) ? actions['#ComputerSystem.Reset'] : undefined;
  const target = isObj(reset) ? reset.target : undefined;
  if (typeof target !== 'string' || !/^\/redfish\/v1\/[\x21-\x7e]{1,500}$/.test(target))
    throw new BmcFailure('refused', 'the system offers no #ComputerSystem.Reset action with a target under /redfish/v1/');
  const allowedRaw = isObj(reset) ? reset['ResetType@Redfish.AllowableValues'] : undefined;
  const allowed = Array.isArray(allowedRaw) ? allowedRaw.filter((v): v is string => typeof v === 'string') : null;
  return { target, allowed };
}

/** The first message of a Redfish error body, bounded; empty when there is none. */
function redfishMessage(text: string): string {
  try {
    const j = JSON.parse(text) as unknown;
    const err = isObj(j) ? j.error : undefined;
    const msg = isObj(err) ? err.message : undefined;
    return typeof msg === 'string' ? `: ${msg.slice(0, 200)}` : '';
  } catch {
    return '';
  }
}
