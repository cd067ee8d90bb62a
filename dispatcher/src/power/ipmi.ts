/**
 * IPMI over LAN through ipmitool (Debian package `ipmitool`), interface lanplus (IPMI 2.0).
 *
 * The password goes by file (`-f passwordFile`), never on the command line: argv is public
 * in /proc and ps. `-C 3` (RAKP-HMAC-SHA1, AES) skips the cipher-suite probe some BMCs
 * (ipmi_sim among them) never answer. `-v` makes ipmitool say why a session failed, which
 * tells wrong credentials from a BMC that does not answer.
 */
import { spawn } from 'node:child_process';
import { BmcFailure, bmcLabel, splitAddress, type BmcDriver, type BmcSpec, type PowerAction, type PowerState } from './bmc.js';

export const IPMITOOL = 'ipmitool';
const IPMI_PORT = 623;
/** Stops reading a runaway ipmitool's output past this. */
const MAX_OUTPUT = 64 * 1024;

const VERB: Record<PowerAction, string> = { on: 'on', off: 'off', cycle: 'cycle', reset: 'reset' };

export interface IpmiOptions {
  /** ipmitool's -N, seconds per attempt (default 1: a BMC on the LAN answers in ms; a silent one is given up in about 7 s). */
  timeoutS?: number;
  /** ipmitool's -R (default 2). */
  retries?: number;
  bin?: string;
}

export class IpmiDriver implements BmcDriver {
  constructor(
    private readonly bmc: BmcSpec,
    private readonly opts: IpmiOptions = {},
  ) {}

  /** The argv, without the password: tests assert on it. */
  argv(command: string[]): string[] {
    const { host, port } = splitAddress(this.bmc.address, IPMI_PORT);
    return [
      '-v',
      '-I',
      'lanplus',
      '-C',
      '3',
      '-N',
      String(this.opts.timeoutS ?? 1),
      '-R',
      String(this.opts.retries ?? 2),
      '-H',
      host,
      '-p',
      String(port),
      '-U',
      this.bmc.user,
      '-f',
      this.bmc.passwordFile,
      ...command,
    ];
  }

  async status(signal: AbortSignal): Promise<PowerState> {
    return parsePowerStatus(await this.#run(['chassis', 'power', 'status'], signal));
  }

  async act(action: PowerAction, signal: AbortSignal): Promise<void> {
    const out = await this.#run(['chassis', 'power', VERB[action]], signal);
    if (!/Chassis Power Control:/i.test(out))
      throw new BmcFailure('refused', `${bmcLabel(this.bmc)} did not confirm power ${action}: ${lastLine(out) || 'no output'}`);
  }

  #run(command: string[], signal: AbortSignal): Promise<string> {
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(timeoutFailure(this.bmc));
      const child = spawn(this.opts.bin ?? IPMITOOL, this.argv(command), {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
      });
      let out = '';
      let err = '';
      const take = (s: string, d: string) => (s.length < MAX_OUTPUT ? s + d : s);
      child.stdout.setEncoding('utf8').on('data', (d: string) => (out = take(out, d)));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (err = take(err, d)));
      const onAbort = () => child.kill('SIGKILL');
      signal.addEventListener('abort', onAbort, { once: true });
      child.on('error', (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(
          new BmcFailure(
            'refused',
            `cannot run ${this.opts.bin ?? IPMITOOL} for the ${bmcLabel(this.bmc)}: ${e.message} (apt-get install ipmitool)`,
          ),
        );
      });
      child.on('close', (code) => {
        signal.removeEventListener('abort', onAbort);
        if (signal.aborted) return reject(timeoutFailure(this.bmc));
        if (code === 0) return resolve(out);
        reject(classifyIpmiError(this.bmc, err));
      });
    });
  }
}

/** `Chassis Power is on|off` → the state; anything else is a refusal naming what came. */
export function parsePowerStatus(out: string): PowerState {
  const m = /Chassis Power is (on|off)\b/i.exec(out);
  if (!m) throw new BmcFailure('refused', `unexpected answer to power status: ${JSON.stringify(lastLine(out).slice(0, 200))}`);
  return m[1]!.toLowerCase() as PowerState;
}

/** ipmitool's stderr (with -v) → why the call failed. */
export function classifyIpmiError(bmc: BmcSpec, stderr: string): BmcFailure {
  const who = bmcLabel(bmc);
  if (
    /RAKP 2 HMAC is invalid|unauthorized name|invalid (user ?name|password)|insufficient privilege|Authentication type .* not supported/i.test(
      stderr,
    )
  )
    return new BmcFailure('auth', `${who} refused the credentials of user ${JSON.stringify(bmc.user)}`);
  if (/Get Auth Capabilities error|No response from remote controller|timed? ?out/i.test(stderr))
    return new BmcFailure('timeout', `${who} did not answer`);
  return new BmcFailure('refused', `${who} refused: ${lastErrorLine(stderr) || 'ipmitool failed without a message'}`);
}

function timeoutFailure(bmc: BmcSpec): BmcFailure {
  return new BmcFailure('timeout', `${bmcLabel(bmc)} did not answer in time`);
}

function lastLine(s: string): string {
  return (
    s
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean)
      .at(-1) ?? ''
  );
}

/** The last line that says something (not -v's registry chatter), bounded. */
function lastErrorLine(s: string): string {
  const lines = s
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !/^Loading IANA/i.test(l));
  return (lines.at(-1) ?? '').slice(0, 200);
}
