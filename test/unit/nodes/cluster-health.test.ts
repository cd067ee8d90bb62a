/** The cluster file's health checks and suspect detection: accepted forms, defaults, and refusals naming the field. */
import { describe, expect, it } from 'vitest';
import { healthCheckFor, parseClusterFile } from '../../../dispatcher/src/nodes/cluster-file.js';

describe('cluster file: healthCheck, healthChecks, suspectAfter', () => {
  it('takes an argv or a shell string, with defaults for the timing', () => {
    const c = parseClusterFile(`
healthCheck: {command: [/usr/bin/check, --quick]}
healthChecks:
  - labels: [gpu]
    command: nvidia-smi -L
    intervalSeconds: 10
    timeoutSeconds: 5
suspectAfter: 3
`);
    expect(c.healthCheck).toEqual({ command: ['/usr/bin/check', '--quick'], intervalSeconds: 60, timeoutSeconds: 30 });
    expect(c.suspectAfter).toBe(3);
    expect(healthCheckFor(c, ['gpu', 'big'])).toEqual({ command: 'nvidia-smi -L', intervalSeconds: 10, timeoutSeconds: 5 });
    expect(healthCheckFor(c, ['big'])).toEqual(c.healthCheck);
    expect(healthCheckFor(parseClusterFile('enrollment: auto'), ['gpu'])).toBeUndefined();
  });

  it('gives a short interval a timeout no longer than it', () => {
    expect(parseClusterFile('healthCheck: {command: /bin/true, intervalSeconds: 5}').healthCheck).toEqual({
      command: '/bin/true',
      intervalSeconds: 5,
      timeoutSeconds: 5,
    });
  });

  it.each([
    ['a mapping expected', 'healthCheck: [true]', /healthCheck: expected a mapping/],
    ['no command', 'healthCheck: {intervalSeconds: 5}', /healthCheck\.command: must be a list/],
    ['an empty argv', 'healthCheck: {command: []}', /healthCheck\.command: must be a list/],
    ['an empty program', "healthCheck: {command: ['']}", /healthCheck\.command: must be a list/],
    ['a blank string', "healthCheck: {command: '  '}", /healthCheck\.command/],
    ['a number in argv', 'healthCheck: {command: [check, 3]}', /healthCheck\.command/],
    ['an unknown field', 'healthCheck: {command: /bin/true, every: 5}', /healthCheck\.every: unknown field/],
    [
      'an interval of 0',
      'healthCheck: {command: /bin/true, intervalSeconds: 0}',
      /healthCheck\.intervalSeconds: must be a number of seconds/,
    ],
    ['a timeout as text', "healthCheck: {command: /bin/true, timeoutSeconds: '5'}", /healthCheck\.timeoutSeconds: must be a number/],
    [
      'a timeout beyond the interval',
      'healthCheck: {command: /bin/true, intervalSeconds: 10, timeoutSeconds: 20}',
      /healthCheck\.timeoutSeconds: must not exceed intervalSeconds \(10\)/,
    ],
    ['a group without labels', 'healthChecks: [{command: /bin/true}]', /healthChecks\[0\]\.labels: must be a list of labels/],
    ['labels on the cluster-wide check', 'healthCheck: {command: /bin/true, labels: [a]}', /healthCheck\.labels: unknown field/],
    ['healthChecks not a list', 'healthChecks: {command: /bin/true}', /healthChecks: expected a list/],
    ['a negative suspectAfter', 'suspectAfter: -1', /suspectAfter: must be a whole number/],
    ['a fractional suspectAfter', 'suspectAfter: 2.5', /suspectAfter: must be a whole number/],
    ['a suspectAfter over 100', 'suspectAfter: 101', /suspectAfter: must be a whole number of failed tasks in a row, 0 to 100/],
  ])('refuses %s, naming the field', (_what, yaml, why) => {
    expect(() => parseClusterFile(yaml)).toThrow(why);
  });

  it('takes suspectAfter: 0 (never)', () => {
    expect(parseClusterFile('suspectAfter: 0').suspectAfter).toBe(0);
  });
});
