/**
 * Task results between the runner's form (dispatch/contract.ts TaskResult: plain texts) and
 * the wire form (long texts gzip-compressed, compression.ts). The agent packs, the hub unpacks.
 */
import type { TaskResult } from '../dispatch/contract.js';
import { isPacked, packText, unpackText } from './compression.js';
import type { WireTaskResult } from './messages.js';

export async function toWireResult(r: TaskResult): Promise<WireTaskResult> {
  const [stdout, stderr] = await Promise.all([packText(r.stdout), packText(r.stderr)]);
  return { ...r, stdout, stderr };
}

/**
 * Unpacks one result. A text that does not decompress (corrupt, or over `maxTextBytes` once
 * inflated) is replaced by an empty one marked truncated, and the result's `error` says why:
 * the result is still recorded, not bounced back and forth.
 */
export async function fromWireResult(w: WireTaskResult, maxTextBytes: number): Promise<TaskResult> {
  if (!isPacked(w.stdout) && !isPacked(w.stderr)) return w as TaskResult;
  const r: TaskResult = { ...w, stdout: '', stderr: '' };
  const problems: string[] = [];
  for (const stream of ['stdout', 'stderr'] as const) {
    try {
      r[stream] = await unpackText(w[stream], maxTextBytes);
    } catch (err) {
      r[stream] = '';
      r[stream === 'stdout' ? 'stdoutTruncated' : 'stderrTruncated'] = true;
      problems.push(`${stream} could not be decompressed: ${(err as Error).message}`);
    }
  }
  if (problems.length) r.error = [w.error, ...problems].filter(Boolean).join('; ');
  return r;
}
