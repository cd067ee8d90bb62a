/**
 * How `dispatcherctl` fails: a message that says what went wrong, a hint that says what to
 * do, the API's error code when the dispatcher refused, and a documented exit code.
 */

/** Exit codes (also listed in `dispatcherctl --help`). `exec` exits with the command's own code. */
export const EXIT = {
  OK: 0,
  /** The dispatcher refused (bad node name, wrong state...) or the operation failed. */
  FAILED: 1,
  /** Bad flags or arguments. */
  USAGE: 2,
  /** The dispatcher could not be reached, or did not answer in time. */
  UNREACHABLE: 3,
  /** Missing or wrong admin token. */
  UNAUTHORIZED: 4,
} as const;
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

export class CtlError extends Error {
  /** The API's DSP_ERR_* code, or a CLI-side code (`CTL_UNREACHABLE`, `CTL_USAGE`...). */
  readonly code: string;
  readonly hint: string | undefined;
  readonly exitCode: number;
  /** HTTP status, when the dispatcher answered. */
  readonly status: number | undefined;
  constructor(code: string, message: string, opts: { hint?: string; exitCode?: number; status?: number; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'CtlError';
    this.code = code;
    this.hint = opts.hint;
    this.exitCode = opts.exitCode ?? EXIT.FAILED;
    this.status = opts.status;
  }

  toJSON(): { error: { code: string; message: string; hint?: string } } {
    return { error: { code: this.code, message: this.message, ...(this.hint ? { hint: this.hint } : {}) } };
  }
}

export function usageError(message: string, hint?: string): CtlError {
  return new CtlError('CTL_USAGE', message, { exitCode: EXIT.USAGE, ...(hint ? { hint } : {}) });
}
