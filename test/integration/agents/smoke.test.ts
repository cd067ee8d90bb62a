import { afterAll, describe, expect, it } from 'vitest';
import { FakeEngine } from './fake-engine.js';
import { startAgent, startHub, waitFor } from './harness.js';

describe('smoke', () => {
  const engine = new FakeEngine();
  let hub: Awaited<ReturnType<typeof startHub>>;
  afterAll(async () => hub?.stop());
  it('runs tasks through a real agent', async () => {
    hub = await startHub(engine);
    const a = startAgent([
      '--dispatcher',
      hub.url,
      '--enroll-token',
      hub.enrollToken,
      '--dispatcher-key',
      hub.pubKeyFile,
      '--mac',
      '52:54:00:aa:00:01',
      '--work-dir',
      `${hub.dataDir}/agent1`,
    ]);
    try {
      await a.waitForLine(/connected to the dispatcher/);
      engine.add(Array.from({ length: 50 }, (_, i) => ({ command: `echo hello ${i}; mkdir -p out; echo ${i} > out/x.txt` })));
      await waitFor('50 results', () => engine.done >= 50);
      const r = [...engine.results.values()][0]!;
      console.log(r);
    } finally {
      console.log(a.out.join('\n'));
      await a.kill();
    }
    expect(engine.done).toBe(50);
  });
});
