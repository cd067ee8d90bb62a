/**
 * Task results between the runner's form (messages.ts TaskResult: plain texts) and
 * the wire form (long texts gzip-compressed, compression.ts). The agent packs, the hub unpacks.
 *
 * Unpacking is bounded (ResultLimits): texts are inflated through a stream up to a cap per
 * task and per message, and an outputs tar is measured the same way on arrival (counted,
 * not kept) and refused past its caps. A text past its cap is cut there and marked truncated,
 * as the agent does with long output. Results past the message's budget are deferred whole:
 * the hub leaves them unacknowledged and the agent sends them again.
 */
import { inflateBounded, isPacked, packText, type Inflated } from './compression.js';
import type { TaskResult, WireTaskResult } from './messages.js';

export async function toWireResult(r: TaskResult): Promise<WireTaskResult> {
  const [stdout, stderr] = await Promise.all([packText(r.stdout), packText(r.stderr)]);
  return { ...r, stdout, stderr };
}

export interface ResultLimits {
  /** stdout and stderr of one result together, once inflated. */
  textBytes: number;
  /** One result's outputs tar as it travels (gzip-compressed). */
  outputsBytes: number;
  /** That tar once inflated. */
  outputsInflatedBytes: number;
  /** Everything inflated for one results message (texts and outputs tars). */
  messageInflatedBytes: number;
}

/** Part of a result that was cut or refused, and why (for the agent and the log). */
export interface Refusal {
  taskId: number;
  attempt: number;
  field: 'stdout' | 'stderr' | 'outputs';
  why: string;
}

export interface UnpackedResults {
  results: TaskResult[];
  /** Results not unpacked because the message's budget ran out (send them again). */
  deferred: WireTaskResult[];
  refusals: Refusal[];
}

/** Whether a result carries anything compressed (most do not: the hub's fast path). */
export function needsUnpacking(w: WireTaskResult): boolean {
  return isPacked(w.stdout) || isPacked(w.stderr) || w.outputsTarGzB64 !== null;
}

/** Bytes that base64 text decodes to (without decoding it). */
function base64Bytes(b64: string): number {
  const pad = b64.endsWith('==') ? 2 : b64.endsWith('=') ? 1 : 0;
  return Math.floor((b64.length * 3) / 4) - pad;
}

/**
 * Unpacks the results of one message, one after another, within `limits`. A text that does
 * not decompress is replaced by an empty one marked truncated and the result's `error` says
 * why; a refused outputs tar is dropped and `error` says why: such results are still
 * recorded, not bounced back and forth.
 */
export async function fromWireResults(wire: WireTaskResult[], limits: ResultLimits): Promise<UnpackedResults> {
  const out: UnpackedResults = { results: [], deferred: [], refusals: [] };
  let messageLeft = limits.messageInflatedBytes;
  for (let i = 0; i < wire.length; i++) {
    const w = wire[i]!;
    if (!needsUnpacking(w)) {
      out.results.push(w as TaskResult);
      continue;
    }
    // A result past the message's budget waits for the next message, unless it is the
    // first one taken from this message (then its own caps apply: progress is guaranteed).
    const mayDefer = out.results.length > 0;
    const r: TaskResult = { ...w, stdout: '', stderr: '' };
    const notes: string[] = [];
    const refusals: Refusal[] = [];
    const refuse = (field: Refusal['field'], why: string) => refusals.push({ taskId: w.taskId, attempt: w.attempt, field, why });
    let spent = 0;
    let textLeft = limits.textBytes;
    let defer = false;
    for (const stream of ['stdout', 'stderr'] as const) {
      const t = w[stream];
      if (!isPacked(t)) {
        r[stream] = t;
        continue;
      }
      const cap = Math.min(textLeft, messageLeft - spent);
      let inf: Inflated;
      try {
        inf = await inflateBounded(Buffer.from(t.gz, 'base64'), cap, { keep: true });
      } catch (err) {
        r[stream === 'stdout' ? 'stdoutTruncated' : 'stderrTruncated'] = true;
        notes.push(`${stream} could not be decompressed: ${(err as Error).message}`);
        continue;
      }
      if (inf.over && cap < textLeft && mayDefer) {
        defer = true;
        break;
      }
      spent += inf.bytes;
      textLeft -= inf.bytes;
      r[stream] = inf.data!.toString('utf8');
      if (inf.over) {
        r[stream === 'stdout' ? 'stdoutTruncated' : 'stderrTruncated'] = true;
        refuse(
          stream,
          `stdout and stderr inflate to more than ${limits.textBytes} bytes (the dispatcher's resultTextMaxBytes): ${stream} cut there`,
        );
      }
    }
    if (!defer && w.outputsTarGzB64 !== null) {
      let why: string | null = null;
      const packed = base64Bytes(w.outputsTarGzB64);
      if (packed > limits.outputsBytes)
        why = `the outputs tar is ${packed} bytes, more than the ${limits.outputsBytes} allowed (outputsMaxBytes)`;
      else {
        const cap = Math.min(limits.outputsInflatedBytes, messageLeft - spent);
        try {
          const inf = await inflateBounded(Buffer.from(w.outputsTarGzB64, 'base64'), cap, { keep: false });
          if (inf.over && cap < limits.outputsInflatedBytes && mayDefer) defer = true;
          else if (inf.over) why = `the outputs tar inflates to more than ${limits.outputsInflatedBytes} bytes (outputsMaxInflatedBytes)`;
          else spent += inf.bytes;
        } catch (err) {
          why = `the outputs are not a gzip-compressed tar: ${(err as Error).message}`;
        }
      }
      if (why) {
        r.outputsTarGzB64 = null;
        notes.push(`outputs refused: ${why}`);
        refuse('outputs', why);
      }
    }
    if (defer) {
      out.deferred = wire.slice(i);
      break;
    }
    messageLeft -= spent;
    if (notes.length) r.error = [w.error, ...notes].filter(Boolean).join('; ').slice(0, 65_536);
    out.results.push(r);
    out.refusals.push(...refusals);
  }
  return out;
}
