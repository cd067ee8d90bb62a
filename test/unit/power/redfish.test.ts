/** Redfish answers (DMTF ComputerSystem), parsed as hostile input. */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { BmcFailure } from '../../../dispatcher/src/power/bmc.js';
import { parseFirstMember, parsePowerState, parseResetAction } from '../../../dispatcher/src/power/redfish.js';

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
