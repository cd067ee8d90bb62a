import { describe, expect, it } from 'vitest';
import { MetricsRegistry, formatValue } from '../../../dispatcher/src/metrics/registry.js';

describe('metrics registry', () => {
  it('renders counters, gauges and collected samples in Prometheus text format', () => {
    const m = new MetricsRegistry();
    const c = m.counter({ name: 'lc_packets_total', help: 'packets sent', labelNames: ['type'] });
    c.inc({ type: 'offer' });
    c.inc({ type: 'offer' }, 2);
    c.inc({ type: 'ack' });
    const g = m.gauge({ name: 'lc_up', help: 'up' });
    g.set(1);
    m.collect({
      name: 'lc_nodes',
      help: 'nodes by state',
      type: 'gauge',
      labelNames: ['state'],
      collect: () => [{ labels: { state: 'ready' }, value: 3 }],
    });
    m.collect({ name: 'lc_plain', help: 'a number', type: 'counter', collect: () => 7 });
    expect(m.render()).toBe(
      [
        '# HELP lc_packets_total packets sent',
        '# TYPE lc_packets_total counter',
        'lc_packets_total{type="offer"} 3',
        'lc_packets_total{type="ack"} 1',
        '# HELP lc_up up',
        '# TYPE lc_up gauge',
        'lc_up 1',
        '# HELP lc_nodes nodes by state',
        '# TYPE lc_nodes gauge',
        'lc_nodes{state="ready"} 3',
        '# HELP lc_plain a number',
        '# TYPE lc_plain counter',
        'lc_plain 7',
        '',
      ].join('\n'),
    );
  });

  it('escapes label values and help text as the exposition format requires', () => {
    const m = new MetricsRegistry();
    m.collect({ name: 'lc_x', help: 'a \\ b\nc', type: 'gauge', collect: () => [{ labels: { v: 'q"\\\n' }, value: 1 }] });
    expect(m.render()).toContain('# HELP lc_x a \\\\ b\\nc\n');
    expect(m.render()).toContain('lc_x{v="q\\"\\\\\\n"} 1');
  });

  it('renders histograms with cumulative buckets, sum and count', () => {
    const m = new MetricsRegistry();
    const h = m.histogram({ name: 'lc_latency_seconds', help: 'latency', buckets: [0.01, 0.1] });
    h.observe(0.005);
    h.observe(0.05);
    h.observe(3);
    const text = m.render();
    expect(text).toContain('lc_latency_seconds_bucket{le="0.01"} 1');
    expect(text).toContain('lc_latency_seconds_bucket{le="0.1"} 2');
    expect(text).toContain('lc_latency_seconds_bucket{le="+Inf"} 3');
    expect(text).toContain('lc_latency_seconds_sum 3.055');
    expect(text).toContain('lc_latency_seconds_count 3');
  });

  it('reads values back, summing the samples whose labels match', () => {
    const m = new MetricsRegistry();
    m.collect({
      name: 'lc_tasks',
      help: 't',
      type: 'gauge',
      labelNames: ['state', 'job'],
      collect: () => [
        { labels: { state: 'done', job: 1 }, value: 2 },
        { labels: { state: 'done', job: 2 }, value: 3 },
        { labels: { state: 'failed', job: 2 }, value: 1 },
      ],
    });
    expect(m.value('lc_tasks', { state: 'done' })).toBe(5);
    expect(m.value('lc_tasks')).toBe(6);
    expect(m.value('lc_missing')).toBeUndefined();
  });

  it.each([
    ['a bad metric name', () => new MetricsRegistry().counter({ name: '1bad', help: '' })],
    ['a bad label name', () => new MetricsRegistry().counter({ name: 'ok', help: '', labelNames: ['a-b'] })],
    [
      'a duplicate name',
      () => {
        const m = new MetricsRegistry();
        m.gauge({ name: 'a', help: '' });
        m.gauge({ name: 'a', help: '' });
      },
    ],
    ['a counter going down', () => new MetricsRegistry().counter({ name: 'a', help: '' }).inc(-1)],
    ['a missing label', () => new MetricsRegistry().counter({ name: 'a', help: '', labelNames: ['x'] }).inc()],
  ])('refuses %s', (_what, f) => {
    expect(f).toThrow();
  });

  it('keeps scraping when one collector throws', () => {
    const m = new MetricsRegistry();
    m.collect({
      name: 'lc_bad',
      help: 'b',
      type: 'gauge',
      collect: () => {
        throw new Error('boom');
      },
    });
    m.gauge({ name: 'lc_good', help: 'g' }).set(2);
    expect(m.render()).toContain('lc_good 2');
  });

  it.each([
    [NaN, 'NaN'],
    [Infinity, '+Inf'],
    [-Infinity, '-Inf'],
    [1.5, '1.5'],
    [0, '0'],
  ])('formats %s as %s', (v, s) => {
    expect(formatValue(v)).toBe(s);
  });
});
