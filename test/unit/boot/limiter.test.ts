import { describe, expect, it } from 'vitest';
import { FairLimiter, FifoLimiter } from '../../../dispatcher/src/boot/limiter.js';

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

describe('fair limiter', () => {
  /** Submits `n` tasks for `client`; started ones are recorded as client:index and keep their release. */
  function harness(l: FairLimiter) {
    const started: string[] = [];
    const releases = new Map<string, () => void>();
    const submit = (client: string, n: number) => {
      const out = [];
      for (let i = 0; i < n; i++)
        out.push(
          l.submit((r) => {
            started.push(`${client}${i}`);
            releases.set(`${client}${i}`, r);
          }, client),
        );
      return out;
    };
    return { started, release: (k: string) => releases.get(k)!(), submit };
  }

  it('runs at most perClient for one client, so another client starts at once', () => {
    const l = new FairLimiter({ max: 8, maxQueue: 100, perClient: 2 });
    const h = harness(l);
    h.submit('a', 50); // a pile of (stalled) requests from one address
    h.submit('b', 1);
    expect(h.started).toEqual(['a0', 'a1', 'b0']);
    expect([l.active, l.queued, l.clients]).toEqual([3, 48, 2]);
  });

  it('gives a freed slot to the waiting client with the fewest running, in turn among equals', () => {
    const l = new FairLimiter({ max: 2, maxQueue: 100, perClient: 2 });
    const h = harness(l);
    h.submit('a', 4);
    h.submit('b', 2);
    h.submit('c', 2);
    expect(h.started).toEqual(['a0', 'a1']);
    h.release('a0');
    h.release('a1');
    h.release('b0');
    h.release('c0');
    expect(h.started).toEqual(['a0', 'a1', 'b0', 'a2', 'c0', 'b1']);
  });

  it('turns a client away when its own line is full, and still takes others', () => {
    const l = new FairLimiter({ max: 1, maxQueue: 100, perClient: 1, perClientQueue: 2 });
    const h = harness(l);
    const a = h.submit('a', 4);
    expect(a.map((x) => x !== undefined)).toEqual([true, true, true, false]);
    expect(h.submit('b', 1)[0]).toBeDefined();
  });

  it('forgets a client whose last waiter left and whose transfers ended', () => {
    const l = new FairLimiter({ max: 1, maxQueue: 100, perClient: 1 });
    const h = harness(l);
    h.submit('a', 1);
    const [b] = h.submit('b', 1);
    b!.cancel();
    expect([l.queued, l.clients]).toEqual([0, 1]);
    h.release('a0');
    expect([l.active, l.clients]).toEqual([0, 0]);
  });
});
