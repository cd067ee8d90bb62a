/** Redfish answers (DMTF ComputerSystem), parsed as hostile input. */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { BmcFailure } from '../../../dispatcher/src/power/bmc.js';
import { RedfishDriver, parseFirstMember, parsePowerState, parseResetAction } from '../../../dispatcher/src/power/redfish.js';
import { createServer, type Socket } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const SYSTEM = {
  '@odata.id': '/redfish/v1/Systems/1',
  PowerState: 'On',
  Actions: {
    '#ComputerSystem.Reset': {
      target: '/redfish/v1/Systems/1/Actions/ComputerSystem.Reset',
      'ResetType@Redfish.AllowableValues': ['On', 'ForceOff', 'ForceRestart', 7],
    },
  },
};

/** Each parser either answers or throws a BmcFailure: nothing else, whatever the BMC sends. */
function onlyBmcFailures(f: (v: unknown) => unknown) {
  return (v: unknown) => {
    try {
      f(v);
    } catch (e) {
      expect(e).toBeInstanceOf(BmcFailure);
    }
  };
}

describe('Redfish answers', () => {
  it('read a system: power state, reset target, allowed reset types (strings only)', () => {
    expect(parsePowerState(SYSTEM)).toBe('on');
    expect(parsePowerState({ PowerState: 'PoweringOff' })).toBe('off');
    expect(parsePowerState({})).toBe('unknown');
    expect(parseResetAction(SYSTEM)).toEqual({
      target: '/redfish/v1/Systems/1/Actions/ComputerSystem.Reset',
      allowed: ['On', 'ForceOff', 'ForceRestart'],
    });
    expect(parseFirstMember({ Members: [{ '@odata.id': '/redfish/v1/Systems/437XR1138R2' }] })).toBe('/redfish/v1/Systems/437XR1138R2');
  });

  it('refuse what they cannot use, saying what', () => {
    expect(() => parsePowerState({ PowerState: 'Exploding' })).toThrow(/unexpected PowerState "Exploding"/);
    // Found by the fuzz below: an object whose toString is not a function.
    expect(() => parsePowerState({ PowerState: [{ toString: '' }] })).toThrow(/unexpected PowerState \[\{"toString":""\}\]/);
    expect(() => parseFirstMember({ Members: [] })).toThrow(/no member/);
    expect(() => parseFirstMember({ Members: [{ '@odata.id': 'https://evil.example/x' }] })).toThrow(BmcFailure);
    expect(() => parseResetAction({ Actions: { '#ComputerSystem.Reset': { target: '/../../etc/passwd' } } })).toThrow(
      /no #ComputerSystem.Reset action/,
    );
  });

  it('survive any JSON (fuzzed)', () => {
    fc.assert(fc.property(fc.jsonValue(), onlyBmcFailures(parsePowerState)));
    fc.assert(fc.property(fc.jsonValue(), onlyBmcFailures(parseFirstMember)));
    fc.assert(fc.property(fc.jsonValue(), onlyBmcFailures(parseResetAction)));
    const system = fc.record({
      PowerState: fc.oneof(fc.constantFrom('On', 'Off', 'PoweringOn', 'PoweringOff', 'Paused'), fc.jsonValue()),
      Actions: fc.record({
        '#ComputerSystem.Reset': fc.record({
          target: fc.oneof(fc.constant('/redfish/v1/Systems/1/Actions/ComputerSystem.Reset'), fc.string()),
          'ResetType@Redfish.AllowableValues': fc.array(fc.oneof(fc.string(), fc.jsonValue())),
        }),
      }),
    });
    fc.assert(
      fc.property(system, (s) => {
        onlyBmcFailures(parsePowerState)(s);
        try {
          const r = parseResetAction(s);
          expect(r.target.startsWith('/redfish/v1/')).toBe(true);
          expect(r.allowed!.every((t) => typeof t === 'string')).toBe(true);
        } catch (e) {
          expect(e).toBeInstanceOf(BmcFailure);
        }
      }),
    );
  });
});

describe('Redfish driver', () => {
  it('gives up on a BMC that accepts the connection and says nothing, as a timeout naming it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lc-redfish-unit-'));
    const sockets: Socket[] = [];
    const server = createServer((s) => sockets.push(s));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    try {
      const passwordFile = join(dir, 'pw');
      writeFileSync(passwordFile, 'x\n', { mode: 0o600 });
      const driver = new RedfishDriver({ type: 'redfish', address: `127.0.0.1:${port}`, user: 'root', passwordFile });
      const t0 = Date.now();
      const err = await driver.status(AbortSignal.timeout(300)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BmcFailure);
      expect(err).toMatchObject({ kind: 'timeout', message: `redfish BMC 127.0.0.1:${port} did not answer in time` });
      expect(Date.now() - t0).toBeLessThan(3000);
      expect(sockets.length).toBe(1);
    } finally {
      for (const s of sockets) s.destroy();
      server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
