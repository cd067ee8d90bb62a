import { describe, expect, it } from 'vitest';
import { FifoLimiter } from '../../../dispatcher/src/boot/limiter.js';

describe('FIFO limiter', () => {
  it('runs at most max at once and starts the waiting ones in arrival order', () => {
    const l = new FifoLimiter(2, 10);
    const started: number[] = [];
    const releases: (() => void)[] = [];
    for (let i = 0; i < 5; i++) {
      l.submit((r) => {
        started.push(i);
        releases.push(r);
      });
    }
    expect(started).toEqual([0, 1]);
    expect([l.active, l.queued]).toEqual([2, 3]);
    releases[1]!();
    releases[1]!(); // a second release is ignored
    expect(started).toEqual([0, 1, 2]);
    releases[0]!();
    releases[2]!();
    expect(started).toEqual([0, 1, 2, 3, 4]);
    expect(l.active).toBe(2);
  });

  it('turns work away only when the queue is full', () => {
    const l = new FifoLimiter(1, 2);
    expect(l.submit(() => {})).toBeDefined();
    expect(l.submit(() => {})).toBeDefined();
    expect(l.submit(() => {})).toBeDefined();
    expect(l.submit(() => {})).toBeUndefined();
  });

  it('skips a cancelled waiter', () => {
    const l = new FifoLimiter(1, 10);
    let release = () => {};
    const started: string[] = [];
    l.submit((r) => {
      started.push('a');
      release = r;
    });
    const b = l.submit(() => started.push('b'))!;
    l.submit((r) => {
      started.push('c');
      r();
    });
    b.cancel();
    release();
    expect(started).toEqual(['a', 'c']);
    expect(l.active).toBe(0);
  });

  it('releases the slot when a task throws while starting', () => {
    const l = new FifoLimiter(1, 10);
    expect(() =>
      l.submit(() => {
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(l.active).toBe(0);
  });

  it('keeps its queue compact over many cycles', () => {
    const l = new FifoLimiter(1, 100_000);
    let release = () => {};
    l.submit((r) => (release = r));
    let ran = 0;
    for (let i = 0; i < 5000; i++) {
      l.submit((r) => {
        ran++;
        release = r;
      });
    }
    for (let i = 0; i < 5001; i++) release();
    expect(ran).toBe(5000);
    expect([l.active, l.queued]).toEqual([0, 0]);
  });
});
