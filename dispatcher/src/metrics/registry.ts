/**
 * A tiny metrics registry rendered as Prometheus text (exposition format 0.0.4) at /metrics.
 * Every service registers its figures on `core.metrics`:
 *
 *   // push: the service counts as things happen
 *   const offers = core.metrics.counter({ name: 'lilcluster_dhcp_packets_total', help: 'DHCP packets sent', labelNames: ['type'] });
 *   offers.inc({ type: 'offer' });
 *
 *   // pull: the registry reads the service's own counters at scrape time (nothing to keep in step)
 *   core.metrics.collect({ name: 'lilcluster_tftp_transfers_total', help: 'TFTP transfers', type: 'counter',
 *     labelNames: ['outcome'], collect: () => [{ labels: { outcome: 'ok' }, value: svc.stats.ok }] });
 *
 * Names follow Prometheus conventions: `lilcluster_<area>_<what>_<unit>`, counters end in
 * `_total`, times in seconds, sizes in bytes. The status page reads some of them back with
 * `value()` (see names.ts for the ones it reads).
 */

export type MetricType = 'counter' | 'gauge' | 'histogram';
export type Labels = Readonly<Record<string, string | number>>;

export interface Sample {
  labels?: Labels;
  value: number;
}

interface MetricOptions {
  /** `[a-zA-Z_:][a-zA-Z0-9_:]*`, unique in the registry. */
  name: string;
  help: string;
  /** Label names every sample carries (in this order). */
  labelNames?: readonly string[];
}

export interface CollectOptions extends MetricOptions {
  type: 'counter' | 'gauge';
  /** Called at each scrape; a plain number is a sample without labels. */
  collect: () => readonly Sample[] | number;
}

export interface HistogramOptions extends MetricOptions {
  /** Upper bounds, ascending; +Inf is added. Default: DEFAULT_LATENCY_BUCKETS (seconds). */
  buckets?: readonly number[];
}

/** Latency buckets in seconds, from 0.5 ms to 10 s. */
export const DEFAULT_LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] as const;

const NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

interface Metric {
  name: string;
  help: string;
  type: MetricType;
  render(out: string[]): void;
  samples(): Sample[];
}

export class MetricsRegistry {
  readonly #metrics = new Map<string, Metric>();

  /** A counter the caller increments. */
  counter(opts: MetricOptions): Counter {
    const c = new Counter(checkOptions(opts));
    this.#add(c);
    return c;
  }

  /** A gauge the caller sets. */
  gauge(opts: MetricOptions): Gauge {
    const g = new Gauge(checkOptions(opts));
    this.#add(g);
    return g;
  }

  /** A histogram the caller observes values into (seconds for times). */
  histogram(opts: HistogramOptions): Histogram {
    const h = new Histogram(checkOptions(opts), opts.buckets ?? DEFAULT_LATENCY_BUCKETS);
    this.#add(h);
    return h;
  }

  /** A counter or gauge whose samples are read from the service at scrape time. */
  collect(opts: CollectOptions): void {
    this.#add(new Collected(checkOptions(opts), opts.type, opts.collect));
  }

  /** `collect`, replacing a metric of that name: a service started again on the same core reports its own figures. */
  recollect(opts: CollectOptions): void {
    this.#metrics.delete(opts.name);
    this.collect(opts);
  }

  /** Whether a metric of that name is registered (services wired twice in tests can check). */
  has(name: string): boolean {
    return this.#metrics.has(name);
  }

  /** Removes a metric (a service that stops). */
  remove(name: string): void {
    this.#metrics.delete(name);
  }

  /**
   * The current value of a counter or gauge sample whose labels include `labels`
   * (summed when several match); undefined if the metric is not registered.
   */
  value(name: string, labels: Labels = {}): number | undefined {
    const m = this.#metrics.get(name);
    if (!m) return undefined;
    let sum = 0;
    for (const s of m.samples()) {
      if (Object.entries(labels).every(([k, v]) => String(s.labels?.[k]) === String(v))) sum += s.value;
    }
    return sum;
  }

  /** Prometheus text exposition format 0.0.4. */
  render(): string {
    const out: string[] = [];
    for (const m of this.#metrics.values()) {
      out.push(`# HELP ${m.name} ${escapeHelp(m.help)}`, `# TYPE ${m.name} ${m.type}`);
      try {
        m.render(out);
      } catch {
        // A collector that throws must not break the whole scrape; its samples are just absent.
      }
    }
    return out.join('\n') + '\n';
  }

  #add(m: Metric): void {
    if (this.#metrics.has(m.name)) throw new Error(`metric ${m.name} is already registered`);
    this.#metrics.set(m.name, m);
  }
}

/** The content type Prometheus expects for this format. */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

abstract class Labelled {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly string[];
  constructor(opts: Required<MetricOptions>) {
    this.name = opts.name;
    this.help = opts.help;
    this.labelNames = opts.labelNames;
  }
  protected key(labels: Labels | undefined): string {
    if (this.labelNames.length === 0) return '';
    if (!labels) throw new Error(`metric ${this.name} needs labels ${this.labelNames.join(', ')}`);
    return this.labelNames
      .map((l) => {
        const v = labels[l];
        if (v === undefined) throw new Error(`metric ${this.name}: missing label ${l}`);
        return String(v);
      })
      .join('\u0000');
  }
  protected labelsOf(key: string): Labels | undefined {
    if (this.labelNames.length === 0) return undefined;
    const values = key.split('\u0000');
    return Object.fromEntries(this.labelNames.map((l, i) => [l, values[i] ?? '']));
  }
}

export class Counter extends Labelled implements Metric {
  readonly type = 'counter';
  readonly #values = new Map<string, number>();
  /** `inc()`, `inc(3)`, `inc({ type: 'offer' })`, `inc({ type: 'offer' }, 3)`. */
  inc(labels?: Labels | number, by = 1): void {
    if (typeof labels === 'number') {
      by = labels;
      labels = undefined;
    }
    if (!(by >= 0)) throw new Error(`counter ${this.name} can only go up`);
    const k = this.key(labels);
    this.#values.set(k, (this.#values.get(k) ?? 0) + by);
  }
  get(labels?: Labels): number {
    return this.#values.get(this.key(labels)) ?? 0;
  }
  samples(): Sample[] {
    if (this.labelNames.length === 0 && this.#values.size === 0) return [{ value: 0 }];
    return [...this.#values].map(([k, value]) => ({ labels: this.labelsOf(k), value }) as Sample);
  }
  render(out: string[]): void {
    renderSamples(out, this.name, this.samples());
  }
}

export class Gauge extends Labelled implements Metric {
  readonly type = 'gauge';
  readonly #values = new Map<string, number>();
  set(value: number, labels?: Labels): void {
    this.#values.set(this.key(labels), value);
  }
  inc(labels?: Labels | number, by = 1): void {
    if (typeof labels === 'number') {
      by = labels;
      labels = undefined;
    }
    const k = this.key(labels);
    this.#values.set(k, (this.#values.get(k) ?? 0) + by);
  }
  dec(labels?: Labels | number, by = 1): void {
    if (typeof labels === 'number') {
      by = labels;
      labels = undefined;
    }
    this.inc(labels, -by);
  }
  get(labels?: Labels): number {
    return this.#values.get(this.key(labels)) ?? 0;
  }
  samples(): Sample[] {
    if (this.labelNames.length === 0 && this.#values.size === 0) return [{ value: 0 }];
    return [...this.#values].map(([k, value]) => ({ labels: this.labelsOf(k), value }) as Sample);
  }
  render(out: string[]): void {
    renderSamples(out, this.name, this.samples());
  }
}

export class Histogram extends Labelled implements Metric {
  readonly type = 'histogram';
  readonly #bounds: number[];
  readonly #series = new Map<string, { counts: number[]; sum: number; count: number }>();
  constructor(opts: Required<MetricOptions>, buckets: readonly number[]) {
    super(opts);
    if (opts.labelNames.includes('le')) throw new Error(`histogram ${opts.name}: "le" is a reserved label`);
    this.#bounds = [...buckets].sort((a, b) => a - b);
  }
  observe(value: number, labels?: Labels): void {
    const k = this.key(labels);
    let s = this.#series.get(k);
    if (!s) {
      s = { counts: new Array(this.#bounds.length).fill(0), sum: 0, count: 0 };
      this.#series.set(k, s);
    }
    for (let i = 0; i < this.#bounds.length; i++) if (value <= this.#bounds[i]!) s.counts[i]!++;
    s.sum += value;
    s.count++;
  }
  /** Starts a timer; call the returned function when done (observes seconds). */
  startTimer(labels?: Labels): () => number {
    const t0 = performance.now();
    return () => {
      const s = (performance.now() - t0) / 1000;
      this.observe(s, labels);
      return s;
    };
  }
  samples(): Sample[] {
    return [...this.#series].map(([k, s]) => ({ labels: this.labelsOf(k), value: s.count }) as Sample);
  }
  render(out: string[]): void {
    for (const [k, s] of this.#series) {
      const labels = this.labelsOf(k) ?? {};
      this.#bounds.forEach((b, i) => out.push(line(`${this.name}_bucket`, { ...labels, le: formatValue(b) }, s.counts[i]!)));
      out.push(line(`${this.name}_bucket`, { ...labels, le: '+Inf' }, s.count));
      out.push(line(`${this.name}_sum`, labels, s.sum), line(`${this.name}_count`, labels, s.count));
    }
  }
}

class Collected implements Metric {
  readonly name: string;
  readonly help: string;
  constructor(
    opts: Required<MetricOptions>,
    readonly type: 'counter' | 'gauge',
    private readonly collectFn: () => readonly Sample[] | number,
  ) {
    this.name = opts.name;
    this.help = opts.help;
  }
  samples(): Sample[] {
    const r = this.collectFn();
    return typeof r === 'number' ? [{ value: r }] : [...r];
  }
  render(out: string[]): void {
    renderSamples(out, this.name, this.samples());
  }
}

function checkOptions(opts: MetricOptions): Required<MetricOptions> {
  if (!NAME_RE.test(opts.name)) throw new Error(`bad metric name "${opts.name}"`);
  const labelNames = opts.labelNames ?? [];
  for (const l of labelNames) if (!LABEL_RE.test(l) || l.startsWith('__')) throw new Error(`metric ${opts.name}: bad label name "${l}"`);
  return { name: opts.name, help: opts.help, labelNames };
}

function renderSamples(out: string[], name: string, samples: readonly Sample[]): void {
  for (const s of samples) out.push(line(name, s.labels, s.value));
}

function line(name: string, labels: Labels | undefined, value: number): string {
  const entries = labels ? Object.entries(labels) : [];
  const l = entries.length ? `{${entries.map(([k, v]) => `${k}="${escapeLabel(String(v))}"`).join(',')}}` : '';
  return `${name}${l} ${formatValue(value)}`;
}

/** Go-style float formatting as Prometheus parses it (`+Inf`, `-Inf`, `NaN`). */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

// Exposition format: label values escape backslash, double quote and newline; HELP escapes backslash and newline.
function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}
function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}
