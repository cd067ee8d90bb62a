/** The cluster file's `healing` and `powerPolicy`: defaults, groups, and refusals that name the field. */
import { describe, expect, it } from 'vitest';
import { parseClusterFile } from '../../../dispatcher/src/nodes/cluster-file.js';
import { groupOf, healingRuleOf } from '../../../dispatcher/src/power/policy-config.js';

const NODES = `nodes:
  - {name: node1, mac: "52:54:00:00:00:01", labels: [gpu]}
  - {name: node2, mac: "52:54:00:00:00:02", labels: [gpu]}
  - {name: node3, mac: "52:54:00:00:00:03"}
`;

describe('cluster file: healing', () => {
  it('defaults, and groups that inherit the top level', () => {
    const c = parseClusterFile('healing:\n  maxCyclesPerHour: 5\n  groups:\n    - {labels: [gpu], lostAfterSeconds: 30}\n');
    expect(c.healing).toEqual({
      lostAfterSeconds: 120,
      maxCyclesPerHour: 5,
      panic: true,
      groups: [{ labels: ['gpu'], lostAfterSeconds: 30, maxCyclesPerHour: 5, panic: true }],
    });
    expect(healingRuleOf(c.healing!, ['gpu']).lostAfterSeconds).toBe(30);
    expect(healingRuleOf(c.healing!, ['cpu']).lostAfterSeconds).toBe(120);
    expect(parseClusterFile('').healing).toBeUndefined();
  });

  it.each([
    ['healing: {lostAfterSeconds: 0}', 'healing.lostAfterSeconds: must be a number of seconds above 0'],
    ['healing: {lostAfterSeconds: -5}', 'healing.lostAfterSeconds: must be a number of seconds above 0'],
    ['healing: {maxCyclesPerHour: 0}', 'healing.maxCyclesPerHour: must be a whole number ≥ 1'],
    ['healing: {maxCyclesPerHour: 1.5}', 'healing.maxCyclesPerHour: must be a whole number ≥ 1'],
    ['healing: {panic: "yes"}', 'healing.panic: must be true or false'],
    ['healing: {lostAfter: 5}', 'healing.lostAfter: unknown field'],
    ['healing: {groups: [{lostAfterSeconds: 5}]}', 'healing.groups[0].labels: must be a list of labels'],
    ['healing: {groups: [{labels: [a], lostAfterSeconds: "1m"}]}', 'healing.groups[0].lostAfterSeconds: must be a number of seconds'],
    ['healing: 3', 'healing: expected a mapping'],
  ])('refuses %s', (yaml, message) => {
    expect(() => parseClusterFile(yaml)).toThrow(message);
  });
});

describe('cluster file: powerPolicy', () => {
  it('a top-level policy is the group of the nodes in no listed group', () => {
    const c = parseClusterFile(
      `powerPolicy:\n  idleOffSeconds: 600\n  minOn: 1\n  groups:\n    - {labels: [gpu], idleOffSeconds: 60, minOn: 2}\n${NODES}`,
    );
    expect(c.powerPolicy!.groups).toEqual([
      { labels: ['gpu'], name: 'labels gpu', idleOffSeconds: 60, minOn: 2, bootTimeoutSeconds: 600 },
      { labels: null, name: 'all other nodes', idleOffSeconds: 600, minOn: 1, bootTimeoutSeconds: 600 },
    ]);
    expect(groupOf(c.powerPolicy!.groups, ['gpu'])!.name).toBe('labels gpu');
    expect(groupOf(c.powerPolicy!.groups, [])!.name).toBe('all other nodes');
  });

  it('groups only: nodes in no group are not managed', () => {
    const c = parseClusterFile(`powerPolicy:\n  groups:\n    - {labels: [gpu], idleOffSeconds: 60}\n${NODES}`);
    expect(groupOf(c.powerPolicy!.groups, [])).toBeUndefined();
  });

  it.each([
    ['powerPolicy: {idleOffSeconds: 0}', 'powerPolicy.idleOffSeconds: must be a number of seconds above 0'],
    ['powerPolicy: {idleOffSeconds: -1}', 'powerPolicy.idleOffSeconds: must be a number of seconds above 0'],
    ['powerPolicy: {idleOffSeconds: 60, bootTimeoutSeconds: 0}', 'powerPolicy.bootTimeoutSeconds: must be a number of seconds above 0'],
    ['powerPolicy: {idleOffSeconds: 60, minOn: -1}', 'powerPolicy.minOn: must be a whole number ≥ 0'],
    ['powerPolicy: {minOn: 1}', 'powerPolicy: give idleOffSeconds (every node) or groups (per label group)'],
    ['powerPolicy: {groups: [{labels: [gpu]}]}', 'powerPolicy.groups[0].idleOffSeconds: missing'],
    ['powerPolicy: {idleOffSeconds: 60, keep: 1}', 'powerPolicy.keep: unknown field'],
    [
      'powerPolicy: {groups: [{labels: [gpu], idleOffSeconds: 60, minOn: 3}]}',
      'powerPolicy.groups[0].minOn: 3 exceeds the group: the cluster file has 2 node(s) with label gpu',
    ],
    [
      'powerPolicy: {idleOffSeconds: 60, minOn: 4}',
      'powerPolicy.minOn: 4 exceeds the group: the cluster file has 3 node(s) in no listed group',
    ],
  ])('refuses %s', (yaml, message) => {
    expect(() => parseClusterFile(`${yaml}\n${NODES}`)).toThrow(message);
  });
});
