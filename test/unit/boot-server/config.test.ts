/** `--role boot` and `--leader` in the configuration: a boot server needs a leader URL, and only a boot server has one. */
import { describe, expect, it } from 'vitest';
import { resolveConfig } from '../../../dispatcher/src/config.js';
import { DispatcherError } from '../../../dispatcher/src/errors.js';

const refusal = (layer: Record<string, unknown>) => {
  try {
    resolveConfig({ dhcp: { mode: 'off' } }, layer);
  } catch (err) {
    return err instanceof DispatcherError ? `${err.code}: ${err.message}` : String(err);
  }
  return 'accepted';
};

describe('boot server configuration', () => {
  it('takes role boot with a leader URL, from YAML keys as from flags', () => {
    const c = resolveConfig(
      { dhcp: { mode: 'off' } },
      { role: 'boot', leader: 'http://10.75.0.1:8080', leaderTokenFile: '/etc/lc/leader.token' },
    );
    expect(c).toMatchObject({ role: 'boot', leader: 'http://10.75.0.1:8080', leaderTokenFile: '/etc/lc/leader.token' });
    expect(resolveConfig({ dhcp: { mode: 'off' } }).role).toBe('dispatcher');
  });

  it.each([
    [{ role: 'boot' }, /DSP_ERR_CONFIG: role boot needs --leader URL/],
    [{ role: 'relay' }, /role: must be dispatcher or boot/],
    [{ role: 'boot', leader: 'http://10.75.0.1:8080/api' }, /leader: "http:\/\/10\.75\.0\.1:8080\/api" is not a URL like/],
    [{ role: 'boot', leader: 'ftp://10.75.0.1' }, /leader: .* is not a URL like/],
    [{ leader: 'http://10.75.0.1:8080' }, /leader: only a boot server \(role boot\) has a leader/],
  ])('refuses %j', (layer, why) => {
    expect(refusal(layer)).toMatch(why);
  });
});
