// One task of the demo job: a Monte-Carlo estimate of π from one seed.
//
//   node pi.js SEED SAMPLES
//
// Throws SAMPLES points in the unit square with a PRNG seeded by SEED (so every run of the
// demo gives the same answer), counts those inside the quarter circle, prints
// "PROGRESS <fraction>" lines on the way (the dispatcher shows them as the task's progress)
// and, last, "<hits> <samples>" on stdout. The demo sums hits and samples over all tasks:
// π ≈ 4 × hits / samples.
'use strict';

const seed = Number(process.argv[2]);
const samples = Number(process.argv[3] || 200000);
if (!Number.isInteger(seed) || !Number.isInteger(samples) || samples <= 0) {
  console.error('usage: node pi.js SEED SAMPLES');
  process.exit(2);
}

// mulberry32, seeded through splitmix32 so nearby seeds give unrelated streams.
let state = seed >>> 0;
state = Math.imul(state ^ (state >>> 16), 0x85ebca6b) >>> 0;
state = Math.imul(state ^ (state >>> 13), 0xc2b2ae35) >>> 0;
state = (state ^ (state >>> 16)) >>> 0;
function random() {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}

let hits = 0;
const quarter = Math.ceil(samples / 4);
for (let i = 1; i <= samples; i++) {
  const x = random();
  const y = random();
  if (x * x + y * y < 1) hits++;
  if (i % quarter === 0 && i < samples) console.log(`PROGRESS ${(i / samples).toFixed(2)}`);
}
console.log(`${hits} ${samples}`);
