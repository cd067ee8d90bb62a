#!/usr/bin/env node
// The import rules of .dependency-cruiser.cjs, checked over the product and test code
// (`make boundaries`, part of `make check`). Uses dependency-cruiser's API rather than its CLI:
// the CLI refuses Node < 22, the API runs on the Node 20 hosts this project still supports.
import { cruise } from 'dependency-cruiser';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const ruleSet = require('../.dependency-cruiser.cjs');

/**
 * Cruises `roots` (paths relative to `baseDir`, by default the repository root, where the rules'
 * paths start) with `rules` and returns the violations.
 */
export async function violations(roots, { rules = ruleSet, baseDir } = {}) {
  const options = { ...rules.options, validate: true, ruleSet: { forbidden: rules.forbidden } };
  if (baseDir) options.baseDir = baseDir;
  const { output } = await cruise(roots, options);
  return output.summary.violations;
}

// Every rule starts from product code, so the cruise starts there too (tests and benchmarks are
// reached only where product code imports them, which product-not-test forbids).
export const ROOTS = ['dispatcher', 'node-agent', 'image'];

if (import.meta.url === `file://${process.argv[1]}`) {
  const found = await violations(ROOTS);
  for (const v of found)
    console.log(
      `${v.rule.severity} ${v.rule.name}: ${v.from} → ${v.to}${v.cycle ? ` (cycle: ${v.cycle.map((c) => c.name ?? c).join(' → ')})` : ''}`,
    );
  const errors = found.filter((v) => v.rule.severity === 'error').length;
  console.log(errors ? `boundaries: ${errors} violation(s) of .dependency-cruiser.cjs` : 'boundaries: no violation');
  process.exit(errors ? 1 : 0);
}
