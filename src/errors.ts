/**
 * The one registry of recgate's error codes.
 *
 * Every error a client can see is a {@link RecgateError} whose `code` is listed in {@link ERRORS}, with the
 * HTTP status and the safe message clients receive. Internal causes (upstream bodies, SQL errors, file
 * paths) travel in `cause` for the logs and never reach a response body. `test/errors.test.ts` checks that
 * every code here is documented in the README.
 */

export interface ErrorSpec {
  /** HTTP status the gateway answers with. */
  readonly status: number;
  /** Message safe to show a client. */
  readonly message: string;
  /** `Retry-After` (seconds) a response with this code carries unless its error names another. */
  readonly retryAfterS?: number;
}

export const ERRORS = {
  RECGATE_INVALID_CALL_SID: { status: 400, message: 'callSid must match ^CA[0-9a-f]{32}$' },
  RECGATE_INVALID_REQUEST: { status: 400, message: 'The request is malformed' },
  RECGATE_UNAUTHENTICATED: { status: 401, message: 'A valid bearer token or signed URL is required' },
  RECGATE_FORBIDDEN: { status: 403, message: 'This credential may not perform this action' },
  RECGATE_NOT_FOUND: { status: 404, message: 'No such call, or it has no recording' },
  RECGATE_ROUTE_NOT_FOUND: { status: 404, message: 'No such route' },
  RECGATE_METHOD_NOT_ALLOWED: { status: 405, message: 'Method not allowed' },
  RECGATE_RECORDING_GONE: { status: 404, message: 'The recording was deleted upstream' },
  RECGATE_RECORDING_PURGED: { status: 410, message: 'The recording was purged by an operator' },
  RECGATE_RECORDING_NOT_READY: {
    status: 503,
    message: 'The recording is still being processed; try again shortly',
    retryAfterS: 5,
  },
  RECGATE_PRECONDITION_FAILED: { status: 412, message: 'A precondition in the request failed' },
  RECGATE_RANGE_NOT_SATISFIABLE: { status: 416, message: 'The requested range is not satisfiable' },
  RECGATE_WAVEFORM_UNAVAILABLE: {
    status: 422,
    message: 'The recording is not audio the gateway can draw a waveform of',
  },
  RECGATE_VARIANT_UNAVAILABLE: {
    status: 409,
    message: 'The recording was made in mono: there is no dual-channel file; ask without channels=2',
  },
  RECGATE_RATE_LIMITED: {
    status: 429,
    message: 'Too many requests for this business; try again later',
    retryAfterS: 1,
  },
  RECGATE_PAYLOAD_TOO_LARGE: { status: 413, message: 'The request body is too large' },
  RECGATE_REQUEST_TIMEOUT: {
    status: 408,
    message: 'The request was not received in time; the connection is closed',
  },
  RECGATE_HEADERS_TOO_LARGE: { status: 431, message: 'The request headers are too large' },
  RECGATE_UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'The request body must be JSON' },
  RECGATE_UPSTREAM_UNAVAILABLE: {
    status: 502,
    message: 'The recording provider is unavailable; try again later',
  },
  RECGATE_UPSTREAM_BUSY: {
    status: 503,
    message: 'Too many recordings are being fetched from the provider; try again shortly',
    retryAfterS: 5,
  },
  RECGATE_UPSTREAM_THROTTLED: {
    status: 503,
    message: 'The recording provider asked the gateway to slow down; try again later',
    retryAfterS: 5,
  },
  RECGATE_UPSTREAM_TIMEOUT: { status: 504, message: 'The recording provider did not answer in time' },
  RECGATE_UPSTREAM_BAD_MEDIA: {
    status: 502,
    message: 'The recording provider sent something that is not a playable recording',
  },
  RECGATE_UPSTREAM_AUTH: {
    status: 502,
    message: 'The gateway could not authenticate to the recording provider',
  },
  RECGATE_LOCK_TIMEOUT: { status: 503, message: 'Timed out waiting for another download of this recording' },
  RECGATE_LOCK_LOST: {
    status: 503,
    message: 'The download lost its lock to another process; try again',
    retryAfterS: 1,
  },
  RECGATE_STORAGE_FULL: { status: 507, message: 'The recording store is out of space' },
  RECGATE_STORAGE_ERROR: { status: 500, message: 'The recording store failed' },
  RECGATE_DATABASE_ERROR: { status: 500, message: 'The call log failed' },
  RECGATE_WEBHOOK_SIGNATURE: { status: 403, message: 'Invalid X-Twilio-Signature' },
  RECGATE_CREDENTIALS_KEY_MISSING: {
    status: 409,
    message: "Storing a business's own Twilio credentials needs RECGATE_CREDENTIALS_KEY",
  },
  RECGATE_CREDENTIALS_UNREADABLE: {
    status: 500,
    message: "The business's stored Twilio credentials could not be decrypted",
  },
  RECGATE_ADMIN_DISABLED: { status: 404, message: 'The admin API is disabled' },
  RECGATE_CLIENT_CLOSED: {
    status: 499,
    message: 'The client closed the connection before the answer was ready',
  },
  RECGATE_SHUTTING_DOWN: { status: 503, message: 'The gateway is shutting down' },
  RECGATE_INTERNAL: { status: 500, message: 'Internal error' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

export interface RecgateErrorOptions {
  /** The underlying error, for logs only. */
  cause?: unknown;
  /** A more specific message, still safe for clients. Defaults to the registry's message. */
  message?: string;
  /** Extra response headers (for example `Retry-After`, `Content-Range`). */
  headers?: Record<string, string>;
}

export class RecgateError extends Error {
  readonly code: ErrorCode;
  readonly statusCode: number;
  readonly headers: Record<string, string>;

  constructor(code: ErrorCode, options: RecgateErrorOptions = {}) {
    super(
      options.message ?? ERRORS[code].message,
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = 'RecgateError';
    this.code = code;
    this.statusCode = ERRORS[code].status;
    const spec: ErrorSpec = ERRORS[code];
    this.headers = {
      ...(spec.retryAfterS === undefined ? {} : { 'retry-after': String(spec.retryAfterS) }),
      ...options.headers,
    };
  }

  /** The JSON body a client receives. */
  toJSON(): { error: { code: ErrorCode; message: string } } {
    return { error: { code: this.code, message: this.message } };
  }
}

/** Creates a {@link RecgateError}; the one way code in recgate makes a client-visible error. */
export function createError(code: ErrorCode, options?: RecgateErrorOptions): RecgateError {
  return new RecgateError(code, options);
}

export function isRecgateError(err: unknown): err is RecgateError {
  return err instanceof RecgateError;
}

/** Disk-full and quota errors become RECGATE_STORAGE_FULL, other I/O errors RECGATE_STORAGE_ERROR. */
export function storageError(cause: unknown): RecgateError {
  if (isRecgateError(cause)) return cause;
  const code = (cause as NodeJS.ErrnoException | undefined)?.code;
  return createError(
    code === 'ENOSPC' || code === 'EDQUOT' ? 'RECGATE_STORAGE_FULL' : 'RECGATE_STORAGE_ERROR',
    {
      cause,
    },
  );
}
