/**
 * Errors that reach a user (API answer, CLI message) carry a stable code, a message and,
 * where useful, a hint on what to do. One registry for the dispatcher: add a code here,
 * document it in dispatcher/README.md (a test keeps the two in step).
 */
export const ErrorCodes = {
  DSP_ERR_CONFIG: { status: 400, message: 'invalid configuration' },
  DSP_ERR_NO_INTERFACE: { status: 400, message: 'full DHCP mode needs an interface' },
  DSP_ERR_UNAUTHORIZED: { status: 401, message: 'missing or wrong admin token' },
  DSP_ERR_FORBIDDEN: { status: 403, message: 'not allowed' },
  DSP_ERR_NODE_NOT_FOUND: { status: 404, message: 'no such node' },
  DSP_ERR_TASK_NOT_FOUND: { status: 404, message: 'no such task' },
  DSP_ERR_JOB_NOT_FOUND: { status: 404, message: 'no such job' },
  DSP_ERR_IMAGE_NOT_FOUND: { status: 404, message: 'no such image' },
  DSP_ERR_NOT_FOUND: { status: 404, message: 'not found' },
  DSP_ERR_BAD_REQUEST: { status: 400, message: 'malformed request' },
  DSP_ERR_BAD_SUBMISSION: { status: 400, message: 'malformed submission' },
  DSP_ERR_RESOURCES_TOO_LARGE: { status: 400, message: 'the task requests more than any node has' },
  DSP_ERR_NODE_STATE: { status: 409, message: 'node is not in a state that allows this' },
  DSP_ERR_NODE_OFFLINE: { status: 409, message: 'node is not connected' },
  DSP_ERR_TIMEOUT: { status: 504, message: 'the node did not answer in time' },
  DSP_ERR_STORE: { status: 503, message: 'the data store cannot be written' },
  DSP_ERR_PAYLOAD_TOO_LARGE: { status: 413, message: 'request body too large' },
  DSP_ERR_UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'this route does not take that content-type' },
  DSP_ERR_DATA_DIR: { status: 500, message: 'the data dir cannot be written' },
  DSP_ERR_STORE_URL: { status: 400, message: 'the PostgreSQL connection string is wrong' },
  DSP_ERR_STORE_CONNECT: { status: 503, message: 'the PostgreSQL database cannot be reached' },
  DSP_ERR_STORE_SCHEMA: { status: 500, message: 'the database holds another schema version' },
  DSP_ERR_STORE_UNAVAILABLE: { status: 503, message: 'the database is unreachable: changes are refused until it returns' },
  DSP_ERR_STANDBY: { status: 503, message: 'this dispatcher is a standby: the leader answers' },
  DSP_ERR_NO_BMC: { status: 409, message: 'the node has no BMC in the cluster file' },
  DSP_ERR_BMC: { status: 502, message: 'the BMC refused or failed' },
  DSP_ERR_BMC_AUTH: { status: 502, message: 'the BMC refused the credentials' },
  DSP_ERR_BMC_TIMEOUT: { status: 504, message: 'the BMC did not answer in time' },
  DSP_ERR_BMC_BACKOFF: { status: 503, message: 'the BMC failed recently; not called again yet' },
  DSP_ERR_BOOT_SERVER_TOKEN: { status: 401, message: 'missing or wrong boot-server token' },
  DSP_ERR_LEADER: { status: 502, message: 'the leader cannot be reached or refused' },
  DSP_ERR_INTERNAL: { status: 500, message: 'internal error' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ErrorCodes;

export class DispatcherError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly hint: string | undefined;
  constructor(code: ErrorCode, message?: string, opts: { hint?: string; cause?: unknown } = {}) {
    super(message ?? ErrorCodes[code].message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'DispatcherError';
    this.code = code;
    this.status = ErrorCodes[code].status;
    this.hint = opts.hint;
  }

  toJSON(): { error: { code: ErrorCode; message: string; hint?: string } } {
    return { error: { code: this.code, message: this.message, ...(this.hint ? { hint: this.hint } : {}) } };
  }
}
