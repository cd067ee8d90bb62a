/**
 * Errors that stop `make image`. Each carries a stable code, a message naming what went
 * wrong and a hint saying how to fix it. One registry for the image builder; the codes are
 * documented in image/README.md (a unit test keeps the two in step).
 */
export const ImageErrorCodes = {
  IMG_ERR_MISSING_TOOL: 'a program the build needs is not installed',
  IMG_ERR_PACKAGE: 'a Debian package could not be resolved or downloaded',
  IMG_ERR_INPUT: 'an input file is missing or malformed',
  IMG_ERR_MODULE: 'a requested kernel module is not in the kernel package',
  IMG_ERR_TOOL_FAILED: 'a program the build runs failed',
  IMG_ERR_OPTION: 'an option has a bad value',
  IMG_ERR_FROM: 'the FROM image cannot be found or its registry cannot be reached',
  IMG_ERR_REGISTRY_AUTH: 'the registry refuses the FROM image without (other) credentials',
  IMG_ERR_DIGEST: 'a layer or manifest of the FROM image does not match its digest',
  IMG_ERR_ROOT: 'the root built from FROM or PACKAGES cannot run tasks (empty, or no /bin/sh)',
} as const satisfies Record<string, string>;

export type ImageErrorCode = keyof typeof ImageErrorCodes;

export class ImageBuildError extends Error {
  readonly code: ImageErrorCode;
  readonly hint: string | undefined;
  constructor(code: ImageErrorCode, message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'ImageBuildError';
    this.code = code;
    this.hint = opts.hint;
  }

  /** The lines `make image` prints before exiting non-zero. */
  describe(): string {
    return `${this.code}: ${this.message}${this.hint ? `\n  hint: ${this.hint}` : ''}`;
  }
}
