import { describe, expect, it } from 'vitest';
import { AgentConfigError, dispatcherList, parseKernelCmdline, resolveSettings } from '../../../node-agent/src/config.js';
import { describeRefusal, DispatcherRotation, httpBaseOf, retryAfterMs } from '../../../node-agent/src/dispatchers.js';

const A = 'ws://10.42.0.2:8080/api/v1/agent';
const B = 'ws://10.42.0.3:8080/api/v1/agent';
const VIP = 'ws://10.42.0.1:8080/api/v1/agent';

describe('a list of dispatchers', () => {
  it('names every dispatcher of a leader and its standbys, in order, each once', () => {
    expect(dispatcherList('http://10.42.0.1:8080, http://10.42.0.2:8080,10.42.0.3:8080,http://10.42.0.2:8080/')).toEqual([
      { wsUrl: VIP, httpBase: 'http://10.42.0.1:8080' },
      { wsUrl: A, httpBase: 'http://10.42.0.2:8080' },
      { wsUrl: B, httpBase: 'http://10.42.0.3:8080' },
    ]);
  });

  it('is read from the flag, LC_DISPATCHER or lc.dispatcher=, the first being wsUrl/httpBase', () => {
    const opts = { cpuCount: 1, fileExists: () => false, tmpDir: '/tmp' };
    const cmd = parseKernelCmdline('lc.dispatcher=http://10.42.0.1:8080,http://10.42.0.2:8080 lc.token=t');
    const s = resolveSettings({}, {}, cmd, opts);
    expect(s.dispatchers.map((d) => d.wsUrl)).toEqual([VIP, A]);
    expect(s).toMatchObject({ wsUrl: VIP, httpBase: 'http://10.42.0.1:8080' });
    expect(resolveSettings({}, { LC_DISPATCHER: '10.42.0.3:8080,10.42.0.2:8080' }, cmd, opts).dispatchers.map((d) => d.wsUrl)).toEqual([
      B,
      A,
    ]);
  });

  it.each([
    ['http://10.42.0.1:8080,ftp://10.42.0.2', /dispatcher 2 of 2 in ".*": dispatcher URL "ftp:\/\/10.42.0.2": use http/],
    ['http://10.42.0.1:8080,,http://10.42.0.2:8080', /dispatcher 2 of 3 in ".*" is empty/],
    ['http://10.42.0.1:8080,http://[bad:8080', /dispatcher 2 of 2 in ".*": dispatcher URL "http:\/\/\[bad:8080" is not a URL/],
    ['http://10.42.0.1:99999,http://10.42.0.2:8080', /dispatcher 1 of 2 .* is not a URL/],
    ['', /the dispatcher is empty/],
  ])('refuses %j, naming the bad entry', (text, re) => {
    expect(() => dispatcherList(text)).toThrow(AgentConfigError);
    expect(() => dispatcherList(text)).toThrow(re);
  });
});

describe('the next dispatcher', () => {
  it('with one dispatcher: the same one, after the back-off, as before', () => {
    const r = new DispatcherRotation([A]);
    expect(r.failed()).toEqual({ url: A, backoff: true, followed: false });
    expect(r.failed(B)).toEqual({ url: A, backoff: true, followed: false });
    expect(r.lost()).toEqual({ url: A, backoff: true, followed: false });
  });

  it('tries the next one at once after a refused connection, and backs off once a whole round failed', () => {
    const r = new DispatcherRotation([VIP, A, B]);
    expect(r.current).toBe(VIP);
    expect(r.failed()).toEqual({ url: A, backoff: false, followed: false });
    expect(r.failed()).toEqual({ url: B, backoff: false, followed: false });
    expect(r.failed()).toEqual({ url: VIP, backoff: true, followed: false });
    expect(r.failed()).toEqual({ url: A, backoff: false, followed: false });
  });

  it("goes to the leader a standby names next, by any of the leader's URLs", () => {
    const r = new DispatcherRotation([VIP, A, B]);
    expect(r.failed()).toEqual({ url: A, backoff: false, followed: false }); // the VIP: refused
    expect(r.failed('http://10.42.0.3:8080')).toEqual({ url: B, backoff: false, followed: true }); // A, a standby, names B
    r.connected();
    expect(r.current).toBe(B);
  });

  it('follows a named leader once a round, so two standbys naming each other cannot spin it', () => {
    const r = new DispatcherRotation([A, B]);
    expect(r.failed(B)).toEqual({ url: B, backoff: false, followed: true });
    expect(r.failed(A)).toEqual({ url: A, backoff: true, followed: false });
    expect(r.failed(B)).toEqual({ url: B, backoff: false, followed: true });
  });

  it('ignores a leader outside its own list, and a standby naming itself', () => {
    const r = new DispatcherRotation([A, B]);
    expect(r.failed('http://192.0.2.66:8080')).toEqual({ url: B, backoff: false, followed: false });
    expect(r.failed('http://10.42.0.3:8080')).toEqual({ url: A, backoff: true, followed: false });
    expect(r.indexOf('not a url')).toBe(-1);
    expect(r.indexOf('https://10.42.0.2:8080')).toBe(-1);
  });

  it("waits no longer than a standby's Retry-After once the round failed: a takeover is under way", () => {
    const r = new DispatcherRotation([VIP, A, B]);
    r.failed();
    r.failed(undefined, 2000);
    expect(r.failed(undefined, 1000)).toEqual({ url: VIP, backoff: true, followed: false, capMs: 1000 });
    // The next round without a standby's word: the plain back-off again.
    r.failed();
    r.failed();
    expect(r.failed()).toEqual({ url: VIP, backoff: true, followed: false });
  });

  it.each([
    ['1', 1000],
    [' 3 ', 3000],
    ['0', 250],
    ['3600', 5000],
    ['Wed, 21 Oct 2026 07:28:00 GMT', undefined],
    ['-1', undefined],
    [undefined, undefined],
  ])('reads Retry-After %j as %j ms, bounded', (header, want) => {
    expect(retryAfterMs(header, 250, 5000)).toBe(want);
  });

  it('stays with the dispatcher of a lost connection (its own back-off first)', () => {
    const r = new DispatcherRotation([A, B]);
    r.failed();
    r.connected();
    expect(r.lost()).toEqual({ url: B, backoff: true, followed: false });
    expect(r.failed()).toEqual({ url: A, backoff: false, followed: false });
  });

  it('takes task inputs from the dispatcher it talks to', () => {
    expect(httpBaseOf(B)).toBe('http://10.42.0.3:8080');
    expect(httpBaseOf('wss://d.example/api/v1/agent')).toBe('https://d.example');
  });
});

describe("a dispatcher's refusal of the upgrade", () => {
  it("reads a standby's 503: its code, message and the leader", () => {
    const body = JSON.stringify({
      error: {
        code: 'DSP_ERR_STANDBY',
        message: 'this dispatcher is a standby',
        hint: 'connect to the leader',
        leader: 'http://10.42.0.3:8080',
      },
    });
    expect(describeRefusal(503, body)).toEqual({
      why: 'HTTP 503 DSP_ERR_STANDBY this dispatcher is a standby',
      standby: true,
      leader: 'http://10.42.0.3:8080',
    });
    expect(
      describeRefusal(503, JSON.stringify({ error: { code: 'DSP_ERR_STANDBY', message: 'x' }, leader: { url: 'http://h:1', epoch: 3 } })),
    ).toMatchObject({ standby: true, leader: 'http://h:1' });
    expect(describeRefusal(503, JSON.stringify({ error: { code: 'DSP_ERR_STANDBY', message: 'no leader yet' }, leader: null }))).toEqual({
      why: 'HTTP 503 DSP_ERR_STANDBY no leader yet',
      standby: true,
    });
  });

  it.each([
    ['an HTML page', 502, '<html>bad gateway</html>', { why: 'HTTP 502', standby: false }],
    [
      'a leader that is not a URL',
      503,
      '{"error":{"code":"DSP_ERR_STANDBY","leader":"javascript:alert(1)"}}',
      { why: 'HTTP 503 DSP_ERR_STANDBY', standby: true },
    ],
    [
      'control characters in the message',
      404,
      '{"error":{"code":"DSP_ERR_NOT_FOUND","message":"a\\nb"}}',
      { why: 'HTTP 404 DSP_ERR_NOT_FOUND a b', standby: false },
    ],
    ['a JSON array', 503, '[1,2]', { why: 'HTTP 503', standby: false }],
  ])('keeps to what it can trust in %s', (_what, status, body, want) => {
    expect(describeRefusal(status, body)).toEqual(want);
  });
});
