/** ipmitool's answers and failures (with -v), as ipmitool 1.8 prints them against ipmi_sim. */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { BmcFailure, type BmcSpec } from '../../../dispatcher/src/power/bmc.js';
import { IpmiDriver, classifyIpmiError, parsePowerStatus } from '../../../dispatcher/src/power/ipmi.js';

const BMC: BmcSpec = { type: 'ipmi', address: '10.1.0.12:6230', user: 'admin', passwordFile: '/etc/lc/bmc.pw' };

describe('ipmitool output', () => {
  it('reads the power state', () => {
    expect(parsePowerStatus('Chassis Power is on\n')).toBe('on');
    expect(parsePowerStatus('Loading IANA PEN Registry...\nChassis Power is off\n')).toBe('off');
  });

  it('refuses any other answer, quoting it', () => {
    expect(() => parsePowerStatus('Set Chassis Power Control to Cycle failed: Command not supported in present state\n')).toThrow(
      /unexpected answer to power status: "Set Chassis Power Control/,
    );
    expect(() => parsePowerStatus('')).toThrow(BmcFailure);
  });

  it('never throws anything but a BmcFailure on garbage', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 500 }), (s) => {
        try {
          expect(['on', 'off']).toContain(parsePowerStatus(s));
        } catch (e) {
          expect(e).toBeInstanceOf(BmcFailure);
        }
      }),
    );
  });

  it('tells wrong credentials from a BMC that does not answer', () => {
    const bad = classifyIpmiError(
      BMC,
      'Loading IANA PEN Registry...\n> RAKP 2 HMAC is invalid\nError: Unable to establish IPMI v2 / RMCP+ session\n',
    );
    expect(bad.kind).toBe('auth');
    expect(bad.message).toBe('ipmi BMC 10.1.0.12:6230 refused the credentials of user "admin"');
    expect(
      classifyIpmiError(BMC, 'RAKP 2 message indicates an error : unauthorized name\nError: Unable to establish IPMI v2 / RMCP+ session')
        .kind,
    ).toBe('auth');
    const silent = classifyIpmiError(
      BMC,
      'Loading IANA PEN Registry...\nGet Auth Capabilities error\nError issuing Get Channel Authentication Capabilities request\nError: Unable to establish IPMI v2 / RMCP+ session\n',
    );
    expect(silent.kind).toBe('timeout');
    expect(silent.message).toBe('ipmi BMC 10.1.0.12:6230 did not answer');
    const other = classifyIpmiError(
      BMC,
      'Loading IANA PEN Registry...\nChassis Power Control: Cycle failed: Command not supported in present state\n',
    );
    expect(other.kind).toBe('refused');
    expect(other.message).toMatch(/refused: Chassis Power Control: Cycle failed/);
  });

  it('hands ipmitool the password file, never a password', () => {
    const argv = new IpmiDriver(BMC).argv(['chassis', 'power', 'status']);
    expect(argv.slice(argv.indexOf('-f'), argv.indexOf('-f') + 2)).toEqual(['-f', '/etc/lc/bmc.pw']);
    expect(argv).not.toContain('-P');
    expect(argv).not.toContain('-E');
    expect(argv.slice(argv.indexOf('-H'), argv.indexOf('-H') + 4)).toEqual(['-H', '10.1.0.12', '-p', '6230']);
    expect(argv.slice(-3)).toEqual(['chassis', 'power', 'status']);
  });
});
