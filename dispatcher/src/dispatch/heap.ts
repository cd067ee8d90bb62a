/**
 * A binary min-heap ordered by a numeric key, and a running median built on two of them.
 * Used by the task ring for lease expiry (earliest first) and for each job's median task
 * duration (speculative re-execution). O(log n) push/pop, O(1) peek.
 */

export class MinHeap<T> {
  readonly #keys: number[] = [];
  readonly #items: T[] = [];

  get size(): number {
    return this.#keys.length;
  }

  push(key: number, item: T): void {
    const keys = this.#keys;
    const items = this.#items;
    let i = keys.length;
    keys.push(key);
    items.push(item);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (keys[parent]! <= key) break;
      keys[i] = keys[parent]!;
      items[i] = items[parent]!;
      i = parent;
    }
    keys[i] = key;
    items[i] = item;
  }

  peekKey(): number | undefined {
    return this.#keys[0];
  }

  peek(): T | undefined {
    return this.#items[0];
  }

  pop(): T | undefined {
    const keys = this.#keys;
    const items = this.#items;
    const n = keys.length;
    if (n === 0) return undefined;
    const top = items[0];
    const lastKey = keys.pop()!;
    const lastItem = items.pop()!;
    if (n > 1) {
      const size = n - 1;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= size) break;
        const r = l + 1;
        const c = r < size && keys[r]! < keys[l]! ? r : l;
        if (keys[c]! >= lastKey) break;
        keys[i] = keys[c]!;
        items[i] = items[c]!;
        i = c;
      }
      keys[i] = lastKey;
      items[i] = lastItem;
    }
    return top;
  }

  clear(): void {
    this.#keys.length = 0;
    this.#items.length = 0;
  }
}

/** The median of a growing list of numbers (lower median for an even count). */
export class RunningMedian {
  /** The lower half, as a max-heap (keys negated). */
  readonly #low = new MinHeap<number>();
  /** The upper half. */
  readonly #high = new MinHeap<number>();

  get count(): number {
    return this.#low.size + this.#high.size;
  }

  add(x: number): void {
    if (this.#low.size === 0 || x <= -this.#low.peekKey()!) this.#low.push(-x, x);
    else this.#high.push(x, x);
    if (this.#low.size > this.#high.size + 1) {
      const v = this.#low.pop()!;
      this.#high.push(v, v);
    } else if (this.#high.size > this.#low.size) {
      const v = this.#high.pop()!;
      this.#low.push(-v, v);
    }
  }

  /** undefined until a first value is added. */
  get median(): number | undefined {
    return this.#low.peek();
  }
}
