import { describe, expect, it } from 'vitest';
import { CommandTracker } from '../../../dispatcher/src/agents/commands.js';

const tracker = () => new CommandTracker(() => 'node7');

describe('operator commands in flight (hub side)', () => {
  it('completes reboot on acknowledgement and remembers the node is rebooting', async () => {
    const t = tracker();
    const p = t.start(1, { kind: 'reboot' }, 1000, undefined, () => true);
    t.onReply({ type: 'control-ack', id: 1, ok: true });
    expect(await p).toMatchObject({ ok: true, ackMs: expect.any(Number) });
    expect(t.fate).toBe('rebooting');
  });

  it('waits for control-done for exec, passing output on', async () => {
    const t = tracker();
    const out: string[] = [];
    const p = t.start(
      2,
      { kind: 'exec', command: 'ls' },
      1000,
      (s, c) => out.push(`${s}:${c}`),
      () => true,
    );
    t.onReply({ type: 'control-ack', id: 2, ok: true });
    t.onReply({ type: 'control-output', id: 2, stream: 'stdout', data: 'a\n' });
    t.onReply({ type: 'control-done', id: 2, ok: true, result: { exitCode: 0 } });
    expect(await p).toMatchObject({ ok: true, result: { exitCode: 0 } });
    expect(out).toEqual(['stdout:a\n']);
    t.onReply({ type: 'control-done', id: 2, ok: false }); // late duplicate: ignored
  });

  it('ends at a refusal, times out a silent node, fails what the connection leaves behind', async () => {
    const t = tracker();
    const refused = t.start(3, { kind: 'poweroff' }, 1000, undefined, () => true);
    t.onReply({ type: 'control-ack', id: 3, ok: false, error: 'needs --allow-power' });
    expect(await refused).toMatchObject({ ok: false, error: 'needs --allow-power' });
    expect(t.fate).toBeUndefined();
    await expect(t.start(4, { kind: 'inspect' }, 30, undefined, () => true)).rejects.toMatchObject({
      code: 'DSP_ERR_TIMEOUT',
      message: 'node7 did not answer inspect within 30 ms',
    });
    await expect(t.start(5, { kind: 'inspect' }, 1000, undefined, () => false)).rejects.toMatchObject({ code: 'DSP_ERR_NODE_OFFLINE' });
    const pending = t.start(6, { kind: 'exec', command: 'sleep 9' }, 1000, undefined, () => true);
    const rebooting = t.start(7, { kind: 'reboot' }, 1000, undefined, () => true);
    t.connectionClosed();
    await expect(pending).rejects.toMatchObject({ code: 'DSP_ERR_NODE_OFFLINE' });
    const settled = await Promise.race([
      rebooting.then(
        () => 'settled',
        () => 'rejected',
      ),
      new Promise((r) => setTimeout(() => r('open'), 50)),
    ]);
    expect(settled).toBe('rejected'); // not acknowledged before the close: it failed
  });
});
