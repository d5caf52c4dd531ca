/**
 * The emulator's HTTP surface: Twilio's REST shapes under `/2010-04-01/Accounts/{AccountSid}/` with HTTP
 * Basic auth, and the unauthenticated control API under `/__emulator/`.
 */
import { timingSafeEqual } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { type FastifyReply, type FastifyRequest, fastify, LogController } from 'fastify';
import type { Logger } from 'pino';
import { isRecgateError } from '../errors.js';
import { CALL_SID_PATTERN, RECORDING_SID_PATTERN } from '../sid.js';
import { type FaultQueue, HTML_FAULT_PAGE } from './faults.js';
import { type BodyEnding, evaluateRange, writeBody } from './media.js';
import type { EmulatorState } from './state.js';

export interface Throttle {
  ttfbMs: number;
  bandwidth: number;
  rangeSupport: boolean;
}

export interface MediaStats {
  /** GET media requests per recording SID. */
  requests: Map<string, number>;
  /** HEAD media requests per recording SID. */
  heads: Map<string, number>;
  /** GET media requests being answered now (from arrival until the response closes), and the most at once. */
  active: number;
  maxActive: number;
  /** Body bytes of GET media responses written to the socket per recording SID (fault bodies included). */
  bytes: Map<string, number>;
  /** GET media requests per account whose credentials made them, then per recording SID. */
  byCredential: Map<string, Map<string, number>>;
  /** GET media requests per account named in the path, then per recording SID. */
  byAccount: Map<string, Map<string, number>>;
}

export interface ServerContext {
  state: EmulatorState;
  faults: FaultQueue;
  throttle: Throttle;
  stats: MediaStats;
  authToken: string;
  apiKeys: Record<string, string>;
  logger: Logger | false;
  closing: Promise<void>;
  statsJson(): unknown;
  reset(): void;
}

const FILE = new RegExp(`^(${RECORDING_SID_PATTERN})(\\.json|\\.mp3|\\.wav)?$`);
const CALL_FILE = new RegExp(`^(${CALL_SID_PATTERN})\\.json$`);
const DEFAULT_PAGE_SIZE = 50;
const MAX_PAGE_SIZE = 1000;
const HTML_FAULT_BODY = Buffer.from(HTML_FAULT_PAGE, 'utf8');

export function buildServer(ctx: ServerContext) {
  const app = fastify({
    ...(ctx.logger ? { loggerInstance: ctx.logger } : { logger: false }),
    logController: new LogController({ disableRequestLogging: true }),
    // Stalled and throttled media responses must not hold close() hostage.
    forceCloseConnections: true,
    exposeHeadRoutes: false,
  });
  const log = ctx.logger || undefined;
  /** The account whose credentials authenticated each REST request. */
  const principals = new WeakMap<FastifyRequest, string>();

  // Control calls like `curl -X POST -H 'content-type: application/json' .../reset` carry no body at all.
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim() === '') {
      done(null, undefined);
      return;
    }
    try {
      done(null, JSON.parse(text));
    } catch {
      done(Object.assign(new Error('The body is not valid JSON'), { statusCode: 400 }), undefined);
    }
  });

  app.setErrorHandler((err: Error & { statusCode?: number }, request, reply) => {
    if (isRecgateError(err)) {
      void reply.code(err.statusCode).send(err.toJSON());
      return;
    }
    const status = err.statusCode;
    if (typeof status === 'number' && status >= 400 && status < 500) {
      if (request.url.startsWith('/__emulator/')) {
        void reply.code(status).send({ error: { code: 'RECGATE_INVALID_REQUEST', message: err.message } });
      } else {
        twilioError(reply, status, 20001, err.message);
      }
      return;
    }
    log?.error({ err }, 'emulator request failed');
    twilioError(reply, 500, 20500, 'Internal Server Error');
  });

  app.setNotFoundHandler((request, reply) => {
    twilioError(reply, 404, 20404, notFoundMessage(request.url));
  });

  app.addHook('onRequest', async (request, reply) => {
    if (!request.url.startsWith('/2010-04-01/')) return;
    const principal = authenticated(request.headers.authorization, ctx);
    if (principal === undefined) {
      void reply.header('WWW-Authenticate', 'Basic realm="Twilio API"');
      twilioError(reply, 401, 20003, 'Authenticate');
      return reply;
    }
    // Twilio's access rule: an account's credentials reach its own resources and its subaccounts'; another
    // account's path answers as if it did not exist.
    const accountSid = /^\/2010-04-01\/Accounts\/([^/?.]+)/.exec(request.url)?.[1];
    if (accountSid !== undefined && !ctx.state.mayAccess(principal, accountSid)) {
      twilioError(reply, 404, 20404, notFoundMessage(request.url));
      return reply;
    }
    principals.set(request, principal);
    return undefined;
  });

  type AccountParams = { account: string };

  app.get<{ Params: { file: string } }>('/2010-04-01/Accounts/:file', async (request, reply) => {
    const sid = /^(AC[0-9a-f]{32})\.json$/.exec(request.params.file)?.[1];
    const found = sid === undefined ? undefined : ctx.state.accounts.get(sid);
    if (!found) return twilioError(reply, 404, 20404, notFoundMessage(request.url));
    return ctx.state.accountJson(found);
  });

  app.get<{ Params: AccountParams & { file: string } }>(
    '/2010-04-01/Accounts/:account/Calls/:file',
    async (request, reply) => {
      const sid = CALL_FILE.exec(request.params.file)?.[1];
      const call = sid === undefined ? undefined : ctx.state.callIn(request.params.account, sid);
      if (!call) return twilioError(reply, 404, 20404, notFoundMessage(request.url));
      return ctx.state.callJson(call);
    },
  );

  app.get<{ Params: AccountParams & { callSid: string; sub: string }; Querystring: Record<string, string> }>(
    '/2010-04-01/Accounts/:account/Calls/:callSid/:sub',
    async (request, reply) => {
      const { callSid, sub, account } = request.params;
      if (sub !== 'Recordings.json' || !ctx.state.callIn(account, callSid)) {
        return twilioError(reply, 404, 20404, notFoundMessage(request.url));
      }
      const items = ctx.state.listRecordings(callSid, account).map((r) => ({ key: r.sid, json: r }));
      return page(
        reply,
        request.query,
        `${ctx.state.accountPath(account)}/Calls/${callSid}/Recordings.json`,
        {},
        'recordings',
        items,
        (r) => ctx.state.recordingJson(r),
      );
    },
  );

  app.route<{ Params: AccountParams & { callSid: string; file: string } }>({
    method: ['GET', 'DELETE'],
    url: '/2010-04-01/Accounts/:account/Calls/:callSid/Recordings/:file',
    handler: async (request, reply) => {
      const match = FILE.exec(request.params.file);
      const recording =
        match && match[2] === '.json'
          ? ctx.state.visibleRecording(match[1]!, request.params.account)
          : undefined;
      if (!recording || recording.callSid !== request.params.callSid) {
        return twilioError(reply, 404, 20404, notFoundMessage(request.url));
      }
      if (request.method === 'DELETE') {
        ctx.state.delete(recording.sid);
        return reply.code(204).send();
      }
      return ctx.state.recordingJson(recording);
    },
  });

  app.get<{ Params: AccountParams & { collection: string }; Querystring: Record<string, string> }>(
    '/2010-04-01/Accounts/:account/:collection',
    async (request, reply) => {
      const { collection, account } = request.params;
      const accountPath = ctx.state.accountPath(account);
      if (collection === 'Recordings.json') {
        const callSid = request.query.CallSid;
        const range = dateCreatedRange(request.query);
        if (typeof range === 'string') return twilioError(reply, 400, 20001, range);
        const items = ctx.state
          .listRecordings(callSid, account)
          .filter((r) => inRange(r.startTime, range))
          .map((r) => ({ key: r.sid, json: r }));
        const filters: Record<string, string> = {
          ...(callSid === undefined ? {} : { CallSid: callSid }),
          ...range.filters,
        };
        return page(
          reply,
          request.query,
          `${accountPath}/Recordings.json`,
          filters,
          'recordings',
          items,
          (r) => ctx.state.recordingJson(r),
        );
      }
      if (collection === 'Calls.json') {
        const parent = request.query.ParentCallSid;
        const items = ctx.state
          .listCalls(account)
          .filter((c) => parent === undefined || c.parentCallSid === parent)
          .map((c) => ({ key: c.sid, json: c }));
        const filters: Record<string, string> = parent === undefined ? {} : { ParentCallSid: parent };
        return page(reply, request.query, `${accountPath}/Calls.json`, filters, 'calls', items, (c) =>
          ctx.state.callJson(c),
        );
      }
      return twilioError(reply, 404, 20404, notFoundMessage(request.url));
    },
  );

  app.route<{ Params: AccountParams & { file: string } }>({
    method: ['GET', 'HEAD', 'DELETE'],
    url: '/2010-04-01/Accounts/:account/Recordings/:file',
    handler: async (request, reply) => {
      const match = FILE.exec(request.params.file);
      if (!match) return twilioError(reply, 404, 20404, notFoundMessage(request.url));
      const sid = match[1]!;
      const extension = match[2];
      const { account } = request.params;
      // Counted before the account check: the counters show every attempt, answered or refused.
      if (request.method === 'GET' && extension !== '.json') {
        count(ctx.stats.byCredential, principals.get(request)!, sid);
        count(ctx.stats.byAccount, account, sid);
      }
      if (ctx.state.recordings.get(sid)?.accountSid !== account) {
        return twilioError(reply, 404, 20404, notFoundMessage(request.url));
      }
      if (request.method === 'DELETE') {
        if (extension === '.mp3' || extension === '.wav' || !ctx.state.delete(sid)) {
          return twilioError(reply, 404, 20404, notFoundMessage(request.url));
        }
        log?.info({ recordingSid: sid }, 'recording deleted');
        return reply.code(204).send();
      }
      if (extension === '.json') {
        const recording = ctx.state.visibleRecording(sid);
        if (!recording) return twilioError(reply, 404, 20404, notFoundMessage(request.url));
        return ctx.state.recordingJson(recording);
      }
      await serveMedia(ctx, request, reply, sid, extension === '.wav' ? 'wav' : 'mp3');
      return reply;
    },
  });

  app.post('/__emulator/recordings', async (request, reply) => {
    const created = ctx.state.create(request.body);
    log?.info({ created }, 'recording created');
    return reply.code(201).send(created);
  });

  app.post('/__emulator/public-keys', async (request, reply) => {
    const sid = ctx.state.registerPublicKey(request.body);
    log?.info({ publicKeySid: sid }, 'public key registered');
    return reply.code(201).send({ sid, account_sid: ctx.state.accountSid });
  });

  app.post('/__emulator/accounts', async (request, reply) => {
    const created = ctx.state.createAccount(request.body);
    log?.info({ accountSid: created.account_sid, parent: created.parent_account_sid }, 'account created');
    return reply.code(201).send(created);
  });

  app.get('/__emulator/stats', async () => ctx.statsJson());

  app.post('/__emulator/faults', async (request, reply) => {
    const fault = ctx.faults.add(request.body);
    log?.info({ fault }, 'fault queued');
    return reply.code(201).send({ faults: ctx.faults.pending() });
  });

  app.get('/__emulator/faults', async () => ({ faults: ctx.faults.pending() }));

  app.post('/__emulator/reset', async () => {
    ctx.reset();
    return { ok: true };
  });

  return app;
}

async function serveMedia(
  ctx: ServerContext,
  request: FastifyRequest,
  reply: FastifyReply,
  sid: string,
  format: 'mp3' | 'wav',
): Promise<void> {
  const log = ctx.logger || undefined;
  const isGet = request.method === 'GET';
  const fault = isGet ? ctx.faults.take(sid) : undefined;
  const stats = ctx.stats;
  if (isGet) {
    stats.requests.set(sid, (stats.requests.get(sid) ?? 0) + 1);
    stats.active++;
    stats.maxActive = Math.max(stats.maxActive, stats.active);
    reply.raw.once('close', () => stats.active--);
  } else if (request.method === 'HEAD') {
    stats.heads.set(sid, (stats.heads.get(sid) ?? 0) + 1);
  }
  const throttle = { ...ctx.throttle };
  if (throttle.ttfbMs > 0 && !(await waitFirstByte(ctx, reply, throttle.ttfbMs))) {
    reply.hijack();
    return;
  }

  if (fault?.kind === 'http_500') return twilioError(reply, 500, 20500, 'Internal Server Error');
  if (fault?.kind === 'rate_limit') {
    void reply.header('Retry-After', String(fault.retryAfterS));
    return twilioError(reply, 429, 20429, 'Too Many Requests');
  }
  if (fault?.kind === 'html_page' || fault?.kind === 'empty_body') {
    const html = fault.kind === 'html_page';
    log?.debug({ recordingSid: sid, fault: fault.kind }, 'media fault injected');
    await sendBody(ctx, reply, sid, {
      status: 200,
      headers: {
        'Content-Type': fault.contentType ?? (html ? 'text/html; charset=utf-8' : mediaType(format)),
      },
      body: html ? HTML_FAULT_BODY : Buffer.alloc(0),
      ending: { kind: 'end' },
      omitContentLength: fault.omitContentLength,
      bandwidth: throttle.bandwidth,
    });
    return;
  }
  const recording = ctx.state.visibleRecording(sid);
  if (fault?.kind === 'not_ready' || !recording || ctx.state.status(recording) !== 'completed') {
    return twilioError(reply, 404, 20404, notFoundMessage(request.url));
  }
  const requested = (request.query as Record<string, unknown>).RequestedChannels;
  if (requested !== undefined && requested !== '1' && requested !== '2') {
    return twilioError(reply, 400, 20001, 'RequestedChannels must be 1 or 2');
  }
  const channels = requested === '2' ? 2 : 1;
  if (channels === 2 && recording.channels === 1) {
    // What Twilio documents as warning 16113; the emulator answers it as a 400 carrying that code.
    return twilioError(reply, 400, 16113, 'Cannot download a dual-channel presentation of a mono recording');
  }

  const media = ctx.state.media(recording, { format, channels });
  const etag = `"${media.sha256}"`;
  const lastModified = recording.completedAt.toUTCString();
  const headers: Record<string, string> = {
    'Content-Type': mediaType(format),
    ETag: etag,
    'Last-Modified': lastModified,
  };
  if (throttle.rangeSupport) headers['Accept-Ranges'] = 'bytes';

  const ifNoneMatch = request.headers['if-none-match'];
  if (ifNoneMatch?.split(',').some((t) => weakEquals(t.trim(), etag))) {
    void reply.code(304).headers(headers).send();
    return;
  }

  const size = media.data.length;
  const outcome = throttle.rangeSupport
    ? evaluateRange({
        range: request.headers.range,
        ifRange: single(request.headers['if-range']),
        etag,
        lastModified,
        size,
      })
    : ({ kind: 'full' } as const);
  if (outcome.kind === 'unsatisfiable') {
    void reply
      .code(416)
      .headers({ ...headers, 'Content-Range': `bytes */${size}` })
      .send();
    return;
  }
  let status = 200;
  let body = media.data;
  if (outcome.kind === 'partial') {
    status = 206;
    body = media.data.subarray(outcome.start, outcome.end + 1);
    headers['Content-Range'] = `bytes ${outcome.start}-${outcome.end}/${size}`;
  }
  if (fault?.kind === 'flip_byte') {
    body = flipByte(body, outcome.kind === 'partial' ? outcome.start : 0, size, fault.at);
    log?.debug({ recordingSid: sid, fault: fault.kind }, 'media fault injected');
  }

  let ending: BodyEnding = { kind: 'end' };
  if (fault?.kind === 'reset_mid_body') {
    ending = { kind: 'reset', afterBytes: fault.afterBytes ?? Math.floor(body.length / 2) };
  } else if (fault?.kind === 'short_body') {
    ending = { kind: 'short', afterBytes: fault.afterBytes ?? Math.floor(body.length / 2) };
  } else if (fault?.kind === 'stall') {
    ending = { kind: 'stall', afterBytes: fault.afterBytes ?? 0, stallMs: fault.stallMs };
  }
  if (ending.kind !== 'end') {
    log?.debug({ recordingSid: sid, fault: fault?.kind }, 'media fault injected');
  }
  if (!isGet) {
    headers['Content-Length'] = String(body.length);
    reply.hijack();
    reply.raw.writeHead(status, headers);
    reply.raw.end();
    return;
  }
  await sendBody(ctx, reply, sid, {
    status,
    headers,
    body,
    ending,
    omitContentLength: fault?.omitContentLength ?? false,
    bandwidth: throttle.bandwidth,
  });
}

/**
 * The delay before a media response's headers. Resolves false, early, when the client went away or the
 * emulator is closing: nobody is left to answer, and a pending timer must not keep a closed emulator's
 * process alive for the rest of the delay.
 */
async function waitFirstByte(ctx: ServerContext, reply: FastifyReply, ms: number): Promise<boolean> {
  const stop = new AbortController();
  let answer = true;
  const gone = new Promise<void>((resolve) => {
    reply.raw.once('close', () => {
      answer = false;
      resolve();
    });
  });
  const closing = ctx.closing.then(() => {
    answer = false;
  });
  await Promise.race([sleep(ms, undefined, { signal: stop.signal }).catch(() => undefined), gone, closing]);
  stop.abort();
  return answer;
}

interface BodyResponse {
  status: number;
  /** Headers but Content-Length, which {@link sendBody} adds unless the fault omits it. */
  headers: Record<string, string>;
  body: Buffer;
  ending: BodyEnding;
  /** Close-delimited body: no Content-Length, no chunked encoding, the connection ends after the body. */
  omitContentLength: boolean;
  bandwidth: number;
}

/** Writes a GET media response, counting its body bytes in the stats as the socket takes them. */
async function sendBody(
  ctx: ServerContext,
  reply: FastifyReply,
  sid: string,
  response: BodyResponse,
): Promise<void> {
  const { body } = response;
  const headers = { ...response.headers };
  reply.hijack();
  const res: ServerResponse = reply.raw;
  if (response.omitContentLength) {
    res.useChunkedEncodingByDefault = false;
  } else {
    headers['Content-Length'] = String(body.length);
  }
  res.writeHead(response.status, headers);
  if (typeof res.flushHeaders === 'function') res.flushHeaders();
  await writeBody(res, {
    body,
    bandwidth: response.bandwidth,
    ending: response.ending,
    closing: ctx.closing,
    onBytes: (n) => ctx.stats.bytes.set(sid, (ctx.stats.bytes.get(sid) ?? 0) + n),
  });
}

/** `body` (bytes from `start` of a `size`-byte media) with byte `at` of the media inverted, in a copy. */
function flipByte(body: Buffer, start: number, size: number, at: number | null): Buffer {
  const index = (at === null ? Math.floor(size / 2) : at < 0 ? size + at : at) - start;
  if (index < 0 || index >= body.length) return body;
  const copy = Buffer.from(body);
  copy[index] = copy[index]! ^ 0xff;
  return copy;
}

function mediaType(format: 'mp3' | 'wav'): string {
  return format === 'wav' ? 'audio/x-wav' : 'audio/mpeg';
}

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function weakEquals(a: string, b: string): boolean {
  if (a === '*') return true;
  return a.replace(/^W\//, '') === b.replace(/^W\//, '');
}

/**
 * The account whose credentials the Basic header carries (an account SID with its auth token, or one of the
 * main account's API keys), or `undefined` when they are wrong.
 */
function authenticated(header: string | undefined, ctx: ServerContext): string | undefined {
  if (header === undefined) return undefined;
  const match = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (!match) return undefined;
  const decoded = Buffer.from(match[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  const user = decoded.slice(0, colon);
  const password = decoded.slice(colon + 1);
  // The main account is one of the accounts, with its auth token.
  const account = ctx.state.accounts.get(user);
  if (account !== undefined) return safeEquals(password, account.authToken) ? user : undefined;
  const secret = Object.hasOwn(ctx.apiKeys, user) ? ctx.apiKeys[user] : undefined;
  return secret !== undefined && safeEquals(password, secret) ? ctx.state.accountSid : undefined;
}

function count(counters: Map<string, Map<string, number>>, key: string, sid: string): void {
  const counts = counters.get(key) ?? new Map<string, number>();
  counters.set(key, counts.set(sid, (counts.get(sid) ?? 0) + 1));
}

function safeEquals(a: string, b: string): boolean {
  const left = Buffer.from(a);
  const right = Buffer.from(b);
  return left.length === right.length && timingSafeEqual(left, right);
}

function notFoundMessage(url: string): string {
  return `The requested resource ${url.split('?')[0]} was not found`;
}

/** Twilio's error body. */
function twilioError(reply: FastifyReply, status: number, code: number, message: string): FastifyReply {
  return reply
    .code(status)
    .type('application/json')
    .send({ code, message, more_info: `https://www.twilio.com/docs/errors/${code}`, status });
}

/**
 * Twilio's list envelope. `Page` and `PageSize` select a page; `PageToken` (`PA{sid}`: after that item,
 * `PB{sid}`: before it) keeps paging stable while items come and go, as Twilio's own tokens do.
 */
/** The `DateCreated>=` / `DateCreated<=` filters of a recording list, in ms; or what is wrong with them. */
interface DateRange {
  after: number;
  before: number;
  /** The filters as given, carried into the page URIs. */
  filters: Record<string, string>;
}

/**
 * Twilio's date filters on the account's recordings: `DateCreated>=` and `DateCreated<=` take a date
 * (`YYYY-MM-DD`, midnight UTC) or an ISO 8601 date-time, both inclusive. A client that does not encode the
 * key sends `DateCreated>=X` as the key `DateCreated>` with the value `X`, taken the same way.
 */
function dateCreatedRange(query: Record<string, string>): DateRange | string {
  const range: DateRange = { after: Number.NEGATIVE_INFINITY, before: Number.POSITIVE_INFINITY, filters: {} };
  for (const [key, bound] of [
    ['DateCreated>=', 'after'],
    ['DateCreated>', 'after'],
    ['DateCreated<=', 'before'],
    ['DateCreated<', 'before'],
  ] as const) {
    const value = query[key];
    if (value === undefined) continue;
    const ms = /^\d{4}-\d\d-\d\d$/.test(value) ? Date.parse(`${value}T00:00:00Z`) : Date.parse(value);
    if (!/^\d{4}-\d\d-\d\d/.test(value) || Number.isNaN(ms)) {
      return `${key} must be a date (YYYY-MM-DD) or an ISO 8601 date-time`;
    }
    range[bound] = ms;
    range.filters[key] = value;
  }
  return range;
}

/** Twilio shows `date_created` to the second; the filters compare what it shows. */
function inRange(created: Date, range: DateRange): boolean {
  const at = Math.floor(created.getTime() / 1000) * 1000;
  return at >= range.after && at <= range.before;
}

function page<T>(
  reply: FastifyReply,
  query: Record<string, string>,
  path: string,
  filters: Record<string, string>,
  key: string,
  items: Array<{ key: string; json: T }>,
  render: (item: T) => Record<string, unknown>,
): unknown {
  const pageSizeRaw = query.PageSize ?? String(DEFAULT_PAGE_SIZE);
  const pageSize = Number(pageSizeRaw);
  if (!/^\d+$/.test(pageSizeRaw) || pageSize < 1 || pageSize > MAX_PAGE_SIZE) {
    return twilioError(reply, 400, 20001, `PageSize must be an integer from 1 to ${MAX_PAGE_SIZE}`);
  }
  const pageRaw = query.Page ?? '0';
  if (!/^\d+$/.test(pageRaw)) return twilioError(reply, 400, 20001, 'Page must be a non-negative integer');
  const pageNumber = Number(pageRaw);
  let start = pageNumber * pageSize;
  const token = query.PageToken;
  if (token !== undefined) {
    const index = items.findIndex((item) => item.key === token.slice(2));
    if (token.startsWith('PA') && index >= 0) start = index + 1;
    else if (token.startsWith('PB') && index >= 0) start = Math.max(0, index - pageSize);
  }
  const slice = items.slice(start, start + pageSize);
  const uri = (extra: Record<string, string>) =>
    `${path}?${new URLSearchParams({ ...filters, PageSize: String(pageSize), ...extra }).toString()}`;
  const hasNext = start + pageSize < items.length;
  const hasPrevious = pageNumber > 0 && start > 0;
  return {
    [key]: slice.map((item) => render(item.json)),
    end: slice.length > 0 ? start + slice.length - 1 : start,
    first_page_uri: uri({ Page: '0' }),
    next_page_uri: hasNext
      ? uri({ Page: String(pageNumber + 1), PageToken: `PA${slice[slice.length - 1]!.key}` })
      : null,
    page: pageNumber,
    page_size: pageSize,
    previous_page_uri:
      hasPrevious && slice.length > 0
        ? uri({ Page: String(pageNumber - 1), PageToken: `PB${slice[0]!.key}` })
        : null,
    start,
    uri: uri(
      token === undefined ? { Page: String(pageNumber) } : { Page: String(pageNumber), PageToken: token },
    ),
  };
}
