#!/usr/bin/env node
/**
 * Where a dispatcher's CPU time went: summarises a V8 .cpuprofile (node --cpu-prof, as
 * `PROFILE=1 bash bench/dispatch.sh` writes them) by function (self time) and by source file
 * of our bundle (sourcemapped names are not needed: the bundle keeps function names, and
 * esbuild's `// path` comments are not in the profile, so files come from the function's URL
 * for node_modules and node: internals, "bundle" for our code).
 *
 *   node bench/dispatch-profile.mjs FILE.cpuprofile [--top 40]
 */
import { readFileSync } from 'node:fs';

const file = process.argv[2];
if (!file) {
  console.error('usage: dispatch-profile.mjs FILE.cpuprofile [--top N]');
  process.exit(2);
}
const top = Number(process.argv[process.argv.indexOf('--top') + 1]) || 40;
const prof = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
// Self time per node: sample counts × the mean interval.
const counts = new Map();
for (const id of prof.samples) counts.set(id, (counts.get(id) ?? 0) + 1);
const totalUs = prof.endTime - prof.startTime;
const usPerSample = totalUs / prof.samples.length;

const area = (cf) => {
  const u = cf.url || '';
  if (cf.functionName === '(idle)') return '(idle)';
  if (cf.functionName === '(garbage collector)') return '(gc)';
  if (cf.functionName === '(program)') return '(program: native, not JS)';
  if (u.startsWith('node:')) return `node:${u.slice(5).split('/')[0]}`;
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(u);
  if (nm) return nm[1];
  if (!u) return '(native)';
  return 'bundle';
};
const fnKey = (cf) => `${cf.functionName || '(anonymous)'} ${area(cf)}${cf.url && area(cf) !== 'bundle' ? '' : `:${cf.lineNumber + 1}`}`;
const selfBy = new Map();
const areaBy = new Map();
for (const [id, c] of counts) {
  const cf = byId.get(id).callFrame;
  selfBy.set(fnKey(cf), (selfBy.get(fnKey(cf)) ?? 0) + c);
  areaBy.set(area(cf), (areaBy.get(area(cf)) ?? 0) + c);
}
const pct = (c) => ((100 * c) / prof.samples.length).toFixed(1).padStart(5);
const ms = (c) => ((c * usPerSample) / 1000).toFixed(0).padStart(7);
console.log(`${file}: ${(totalUs / 1e6).toFixed(2)} s, ${prof.samples.length} samples`);
console.log('\nby area (self time):');
for (const [k, c] of [...areaBy].sort((a, b) => b[1] - a[1])) console.log(`${pct(c)} % ${ms(c)} ms  ${k}`);
console.log(`\ntop ${top} functions (self time):`);
for (const [k, c] of [...selfBy].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${pct(c)} % ${ms(c)} ms  ${k}`);
