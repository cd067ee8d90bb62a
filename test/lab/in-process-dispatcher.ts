/**
 * An in-process dispatcher for the operator tests (server.ts's startDispatcher on a free
 * loopback port, DHCP and TFTP off, a temp data dir), plus helpers to fill its registry.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDispatcher, type RunningDispatcher } from '../../dispatcher/src/server.js';
import { resolveConfig, type ConfigOverrides } from '../../dispatcher/src/config.js';
import { silentLogger } from '../../dispatcher/src/log.js';
import { parseMac, type Mac } from '../../dispatcher/src/nodes/mac.js';
import { standInImage } from './dispatcher.js';

export interface TestDispatcher extends RunningDispatcher {
  url: string;
  token: string;
  dataDir: string;
}

export async function startTestDispatcher(overrides: ConfigOverrides = {}): Promise<TestDispatcher> {
  const dataDir = mkdtempSync(join(tmpdir(), 'lc-op-'));
  const config = resolveConfig(
    {
      dhcp: { mode: 'off' },
      dataDir,
      httpPort: 0,
      httpHost: '127.0.0.1',
      tftp: false,
      advertiseAddress: '127.0.0.1',
      imageDir: standInImage(),
      imagesDir: join(dataDir, 'no-images'),
      pxeDir: join(dataDir, 'no-pxe'),
    },
    overrides,
  );
  const stderrWrite = process.stderr.write;
  // startDispatcher prints the log-in link on stderr; keep test output quiet.
  process.stderr.write = (() => true) as typeof process.stderr.write;
  let d: RunningDispatcher;
  try {
    d = await startDispatcher({ config, log: silentLogger() });
  } finally {
    process.stderr.write = stderrWrite;
  }
  return { ...d, url: `http://127.0.0.1:${d.httpPort}`, token: readFileSync(join(dataDir, 'admin.token'), 'utf8').trim(), dataDir };
}

/** `52:54:00:00:00:NN` for node number n (1-based). */
export function testMac(n: number): Mac {
  const hex = n.toString(16).padStart(4, '0');
  return parseMac(`52:54:00:00:${hex.slice(0, 2)}:${hex.slice(2)}`)!;
}
