import assert from 'node:assert/strict';
import { mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import { isRecgateError } from '../../src/errors.js';
import { fileSource } from '../../src/serving/file-source.js';
import { type ServeOptions, serve } from '../../src/serving/serve.js';
import { boundaryOf, memorySource, parseMultipart, readAll } from './memory-source.js';

const BODY = Buffer.from(Array.from({ length: 1000 }, (_, i) => String.fromCharCode(65 + (i % 26))).join(''));
const LAST_MODIFIED = new Date('2024-03-10T12:00:00.250Z');
const LM = 'Sun, 10 Mar 2024 12:00:00 GMT';
const OPTIONS: ServeOptions = {
  contentType: 'audio/mpeg',
  cacheControl: 'private, max-age=3600',
  contentDisposition: 'inline; filename="CA1.mp3"',
};

const source = () => memorySource(BODY, { etag: '"RE1-1000"', lastModified: LAST_MODIFIED, chunkSize: 100 });
const get = (headers: Record<string, string | string[]> = {}) => ({ method: 'GET', headers });
const head = (headers: Record<string, string> = {}) => ({ method: 'HEAD', headers });

describe('serve: whole representation', () => {
  test('GET answers 200 with every representation header and the body', async () => {
    const res = serve(get(), source(), OPTIONS);
    assert.equal(res.statusCode, 200);
    assert.deepEqual(res.headers, {
      ETag: '"RE1-1000"',
      'Last-Modified': LM,
      'Cache-Control': 'private, max-age=3600',
      'Accept-Ranges': 'bytes',
      'Content-Disposition': 'inline; filename="CA1.mp3"',
      'Content-Type': 'audio/mpeg',
      'Content-Length': '1000',
    });
    assert.deepEqual(await readAll(res.stream!), BODY);
  });

  test('HEAD answers the same headers without a stream and without reading', () => {
    const src = source();
    const getRes = serve(get(), source(), OPTIONS);
    getRes.stream!.destroy();
    const res = serve(head(), src, OPTIONS);
    assert.equal(res.statusCode, 200);
    assert.deepEqual(res.headers, getRes.headers);
    assert.equal(res.stream, undefined);
    assert.equal(src.opened.length, 0);
  });

  test('HEAD ignores Range (RFC 9110 defines range handling for GET only)', () => {
    const res = serve(head({ range: 'bytes=0-9' }), source(), OPTIONS);
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['Content-Length'], '1000');
    assert.equal(res.headers['Content-Range'], undefined);
  });

  test('defaults: application/octet-stream, no Cache-Control, no Content-Disposition', () => {
    const res = serve(head(), source());
    assert.equal(res.headers['Content-Type'], 'application/octet-stream');
    assert.equal(res.headers['Cache-Control'], undefined);
    assert.equal(res.headers['Content-Disposition'], undefined);
  });

  test('an empty representation is 200 with an empty body, Range or not', async () => {
    for (const range of [undefined, 'bytes=0-', 'bytes=-1', 'bytes=0-0,5-6']) {
      const src = memorySource('');
      const res = serve(get(range === undefined ? {} : { range }), src);
      assert.equal(res.statusCode, 200, String(range));
      assert.equal(res.headers['Content-Length'], '0');
      assert.equal(res.headers['Content-Range'], undefined);
      assert.equal((await readAll(res.stream!)).length, 0);
      assert.equal(src.opened.length, 0);
    }
  });

  test('an ignored Range header gets the whole representation', async () => {
    for (const range of ['bytes=5-1', 'items=0-1', 'bytes=0-,1-,2-', 'garbage']) {
      const res = serve(get({ range }), source());
      assert.equal(res.statusCode, 200, range);
      assert.equal(res.headers['Content-Range'], undefined);
      assert.deepEqual(await readAll(res.stream!), BODY);
    }
  });
});

describe('serve: single range', () => {
  test('206 with Content-Range, Content-Length and the slice', async () => {
    const src = source();
    const res = serve(get({ range: 'bytes=100-349' }), src, OPTIONS);
    assert.equal(res.statusCode, 206);
    assert.equal(res.headers['Content-Range'], 'bytes 100-349/1000');
    assert.equal(res.headers['Content-Length'], '250');
    assert.equal(res.headers['Content-Type'], 'audio/mpeg');
    assert.equal(res.headers['Accept-Ranges'], 'bytes');
    assert.equal(res.headers.ETag, '"RE1-1000"');
    assert.deepEqual(await readAll(res.stream!), BODY.subarray(100, 350));
    assert.deepEqual(
      src.opened.map(({ start, end }) => [start, end]),
      [[100, 349]],
    );
  });

  test('suffix and open ranges', async () => {
    const suffix = serve(get({ range: 'bytes=-10' }), source());
    assert.equal(suffix.headers['Content-Range'], 'bytes 990-999/1000');
    assert.deepEqual(await readAll(suffix.stream!), BODY.subarray(990));
    const open = serve(get({ range: 'bytes=995-' }), source());
    assert.equal(open.headers['Content-Range'], 'bytes 995-999/1000');
    assert.deepEqual(await readAll(open.stream!), BODY.subarray(995));
  });

  test('header names are case-insensitive and arrays are combined', async () => {
    const res = serve({ method: 'get', headers: { Range: 'bytes=0-1' } }, source());
    assert.equal(res.statusCode, 206);
    res.stream!.destroy();
    const twice = serve(get({ 'if-none-match': ['"a"', '"RE1-1000"'] }), source());
    assert.equal(twice.statusCode, 304);
  });

  test('416 for an unsatisfiable range: Content-Range bytes */size and no body', () => {
    const src = source();
    const res = serve(get({ range: 'bytes=1000-' }), src, OPTIONS);
    assert.equal(res.statusCode, 416);
    assert.equal(res.stream, undefined);
    assert.deepEqual(res.headers, {
      ETag: '"RE1-1000"',
      'Last-Modified': LM,
      'Cache-Control': 'private, max-age=3600',
      'Accept-Ranges': 'bytes',
      'Content-Range': 'bytes */1000',
      'Content-Length': '0',
    });
    assert.equal(src.opened.length, 0);
  });
});

describe('serve: conditionals', () => {
  test('304 carries validators and Cache-Control, no body headers, no stream', () => {
    const src = source();
    const res = serve(get({ 'if-none-match': '"RE1-1000"' }), src, OPTIONS);
    assert.equal(res.statusCode, 304);
    assert.deepEqual(res.headers, {
      ETag: '"RE1-1000"',
      'Last-Modified': LM,
      'Cache-Control': 'private, max-age=3600',
    });
    assert.equal(res.stream, undefined);
    assert.equal(src.opened.length, 0);
  });

  test('304 from If-Modified-Since, also for HEAD', () => {
    assert.equal(serve(get({ 'if-modified-since': LM }), source()).statusCode, 304);
    assert.equal(serve(head({ 'if-modified-since': LM }), source()).statusCode, 304);
  });

  test('412 from If-Match or If-Unmodified-Since, with no body', () => {
    const cases: Record<string, string>[] = [
      { 'if-match': '"other"' },
      { 'if-unmodified-since': 'Sun, 10 Mar 2024 11:00:00 GMT' },
    ];
    for (const headers of cases) {
      const res = serve(get(headers), source(), OPTIONS);
      assert.equal(res.statusCode, 412);
      assert.equal(res.headers['Content-Length'], '0');
      assert.equal(res.headers['Content-Type'], undefined);
      assert.equal(res.stream, undefined);
    }
  });

  test('preconditions are evaluated before Range', () => {
    assert.equal(serve(get({ range: 'bytes=5000-', 'if-match': '"x"' }), source()).statusCode, 412);
    assert.equal(serve(get({ range: 'bytes=0-1', 'if-none-match': '*' }), source()).statusCode, 304);
  });

  test('If-Range: matching tag or date applies the range, anything else sends everything', async () => {
    const cases: [string, number][] = [
      ['"RE1-1000"', 206],
      [LM, 206],
      ['W/"RE1-1000"', 200],
      ['"RE1-999"', 200],
      ['Sun, 10 Mar 2024 12:00:01 GMT', 200],
      ['nonsense', 200],
    ];
    for (const [ifRange, status] of cases) {
      const res = serve(get({ range: 'bytes=0-0', 'if-range': ifRange }), source());
      assert.equal(res.statusCode, status, ifRange);
      assert.equal((await readAll(res.stream!)).length, status === 206 ? 1 : 1000);
    }
  });

  test('If-Range that fails also saves an unsatisfiable range from 416', () => {
    const res = serve(get({ range: 'bytes=5000-', 'if-range': '"old"' }), source());
    assert.equal(res.statusCode, 200);
    res.stream!.destroy();
  });
});

describe('serve: multiple ranges', () => {
  test('multipart/byteranges with an exact Content-Length and one part per coalesced range', async () => {
    const src = source();
    const res = serve(get({ range: 'bytes=0-9, 500-599, 10-19, -5' }), src, OPTIONS);
    assert.equal(res.statusCode, 206);
    assert.equal(res.headers['Content-Range'], undefined);
    const boundary = boundaryOf(res.headers['Content-Type']);
    assert.equal(src.opened.length, 0, 'no part is opened before the body is read');
    const body = await readAll(res.stream!);
    assert.equal(res.headers['Content-Length'], String(body.length));
    const parts = parseMultipart(body, boundary);
    assert.deepEqual(
      parts.map((p) => [p.headers['content-range'], p.headers['content-type'], p.body.toString('latin1')]),
      [
        ['bytes 0-19/1000', 'audio/mpeg', BODY.subarray(0, 20).toString('latin1')],
        ['bytes 500-599/1000', 'audio/mpeg', BODY.subarray(500, 600).toString('latin1')],
        ['bytes 995-999/1000', 'audio/mpeg', BODY.subarray(995).toString('latin1')],
      ],
    );
    assert.deepEqual(
      src.opened.map(({ start, end }) => [start, end]),
      [
        [0, 19],
        [500, 599],
        [995, 999],
      ],
    );
  });

  test('each response gets its own random boundary', () => {
    const a = serve(head(), source());
    const b1 = serve(get({ range: 'bytes=0-0,5-5' }), source());
    const b2 = serve(get({ range: 'bytes=0-0,5-5' }), source());
    b1.stream!.destroy();
    b2.stream!.destroy();
    assert.notEqual(boundaryOf(b1.headers['Content-Type']), boundaryOf(b2.headers['Content-Type']));
    assert.equal(a.headers['Content-Type'], 'application/octet-stream');
  });

  test('opens one part at a time and respects back-pressure', async () => {
    const big = Buffer.alloc(4 * 1024 * 1024, 7);
    const src = memorySource(big, { chunkSize: 64 * 1024 });
    const res = serve(get({ range: 'bytes=0-1048575,2097152-3145727' }), src);
    const stream = res.stream!;
    stream.read(0);
    for (let i = 0; i < 50; i++) await tick();
    assert.equal(src.opened.length, 1, 'second part not opened while the first is unread');
    assert.ok(stream.readableLength <= 256 * 1024, `buffered ${stream.readableLength} bytes`);
    const body = await readAll(stream);
    assert.equal(String(body.length), res.headers['Content-Length']);
    assert.equal(src.opened.length, 2);
  });

  test('destroying the multipart stream destroys the part in progress', async () => {
    const stalled = new PassThrough();
    const src = memorySource(BODY, { override: (start) => (start === 500 ? stalled : undefined) });
    const res = serve(get({ range: 'bytes=0-9,500-509' }), src);
    const stream = res.stream!;
    stream.on('data', () => {});
    stalled.write(Buffer.alloc(3));
    for (let i = 0; i < 20; i++) await tick();
    assert.equal(src.opened.length, 2);
    stream.destroy();
    await tick();
    assert.equal(stalled.destroyed, true);
  });

  test('a part stream error fails the multipart stream', async () => {
    const src = memorySource(BODY, {
      override: (start) =>
        start === 500
          ? new Readable({
              read() {
                this.destroy(new Error('disk on fire'));
              },
            })
          : undefined,
    });
    const res = serve(get({ range: 'bytes=0-9,500-509' }), src);
    await assert.rejects(readAll(res.stream!), /disk on fire/);
  });

  test('a short part fails the multipart stream rather than break Content-Length', async () => {
    const src = memorySource(BODY, {
      override: (start) => (start === 500 ? Readable.from([Buffer.alloc(4)]) : undefined),
    });
    const res = serve(get({ range: 'bytes=0-9,500-509' }), src);
    await assert.rejects(readAll(res.stream!), (err: unknown) => {
      return isRecgateError(err) && err.code === 'RECGATE_STORAGE_ERROR';
    });
  });
});

describe('serve: validation', () => {
  test('methods other than GET and HEAD are the router’s business', () => {
    assert.throws(
      () => serve({ method: 'POST', headers: {} }, source()),
      (err: unknown) => isRecgateError(err) && err.statusCode === 405 && err.headers.Allow === 'GET, HEAD',
    );
  });

  test('invalid options name the field', () => {
    const cases: [ServeOptions, string][] = [
      [{ contentType: 'audio/mpeg\r\nX-Evil: 1' }, 'options.contentType'],
      [{ contentType: '' }, 'options.contentType'],
      [{ cacheControl: 'a\nb' }, 'options.cacheControl'],
      [{ contentDisposition: '\u0000' }, 'options.contentDisposition'],
      [{ maxRanges: 0 }, 'options.maxRanges'],
      [{ maxRanges: 1.5 }, 'options.maxRanges'],
    ];
    for (const [options, field] of cases) {
      assert.throws(
        () => serve(get(), source(), options),
        (err: unknown) => isRecgateError(err) && err.message.includes(field),
      );
    }
  });

  test('maxRanges option caps the number of ranges', () => {
    const res = serve(get({ range: 'bytes=0-0,2-2,4-4' }), source(), { maxRanges: 2 });
    assert.equal(res.statusCode, 200);
    res.stream!.destroy();
  });
});

describe('fileSource', () => {
  let dir: string;
  let path: string;
  const content = Buffer.from(Array.from({ length: 300_000 }, (_, i) => i % 251));

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'recgate-serving-'));
    path = join(dir, 'CA1.mp3');
    await writeFile(path, content);
    await utimes(path, LAST_MODIFIED, LAST_MODIFIED);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('reports size, etag and mtime as Last-Modified', async () => {
    const src = await fileSource(path, { etag: '"RE1-300000"' });
    assert.equal(src.size, content.length);
    assert.equal(src.etag, '"RE1-300000"');
    assert.equal(src.lastModified.getTime(), LAST_MODIFIED.getTime());
    const explicit = new Date('2020-01-01T00:00:00Z');
    assert.equal((await fileSource(path, { etag: '"x"', lastModified: explicit })).lastModified, explicit);
  });

  test('streams inclusive ranges in chunks no larger than highWaterMark', async () => {
    const src = await fileSource(path, { etag: '"x"', highWaterMark: 1000 });
    const stream = src.createReadStream(10, 5009);
    let largest = 0;
    const chunks: Buffer[] = [];
    for await (const chunk of stream) {
      largest = Math.max(largest, (chunk as Buffer).length);
      chunks.push(chunk as Buffer);
    }
    assert.deepEqual(Buffer.concat(chunks), content.subarray(10, 5010));
    assert.ok(largest <= 1000);
  });

  test('serves single and multiple ranges from a real file', async () => {
    const src = await fileSource(path, { etag: '"x"' });
    const full = serve(get(), src);
    assert.deepEqual(await readAll(full.stream!), content);

    const single = serve(get({ range: 'bytes=-70000' }), src);
    assert.equal(single.headers['Content-Range'], `bytes 230000-299999/${content.length}`);
    assert.deepEqual(await readAll(single.stream!), content.subarray(230_000));

    const multi = serve(get({ range: 'bytes=0-99999,200000-' }), src, { contentType: 'audio/mpeg' });
    const body = await readAll(multi.stream!);
    assert.equal(multi.headers['Content-Length'], String(body.length));
    const parts = parseMultipart(body, boundaryOf(multi.headers['Content-Type']));
    assert.deepEqual(parts[0]!.body, content.subarray(0, 100_000));
    assert.deepEqual(parts[1]!.body, content.subarray(200_000));
  });

  test('a missing file or a directory is a storage error', async () => {
    await assert.rejects(fileSource(join(dir, 'nope.mp3'), { etag: '"x"' }), (err: unknown) => {
      return (
        isRecgateError(err) &&
        err.code === 'RECGATE_STORAGE_ERROR' &&
        (err.cause as NodeJS.ErrnoException).code === 'ENOENT'
      );
    });
    await assert.rejects(fileSource(dir, { etag: '"x"' }), (err: unknown) => {
      return isRecgateError(err) && err.code === 'RECGATE_STORAGE_ERROR';
    });
  });

  test('validates options and read ranges', async () => {
    for (const [options, field] of [
      [{ etag: 'unquoted' }, 'options.etag'],
      [{ etag: 'W/"weak"' }, 'options.etag'],
      [{ etag: '"x"', lastModified: new Date(Number.NaN) }, 'options.lastModified'],
      [{ etag: '"x"', highWaterMark: 0 }, 'options.highWaterMark'],
    ] as const) {
      await assert.rejects(
        fileSource(path, options),
        (err: unknown) => isRecgateError(err) && err.message.includes(field),
      );
    }
    const src = await fileSource(path, { etag: '"x"' });
    for (const [start, end] of [
      [-1, 5],
      [5, 4],
      [0, content.length],
      [0.5, 3],
    ]) {
      assert.throws(() => src.createReadStream(start!, end!), isRecgateError);
    }
  });
});

describe('serve: bytes the source has at hand (readNow)', () => {
  const atHand = (has: boolean) => {
    const base = source();
    const asked: [number, number][] = [];
    return Object.assign(base, {
      asked,
      readNow(start: number, end: number) {
        asked.push([start, end]);
        return has ? BODY.subarray(start, end + 1) : undefined;
      },
    });
  };

  test('a single range comes as result.body, with no stream opened; result.stream reads the same bytes', async () => {
    const src = atHand(true);
    const res = serve(get({ range: 'bytes=100-199' }), src, OPTIONS);
    assert.equal(res.statusCode, 206);
    assert.deepEqual(src.asked, [[100, 199]]);
    assert.ok(res.body?.equals(BODY.subarray(100, 200)));
    assert.equal(res.headers['Content-Length'], '100');
    assert.equal(src.opened.length, 0, 'no stream until one is asked for');
    assert.ok((await readAll(res.stream!)).equals(BODY.subarray(100, 200)));
    assert.equal(src.opened.length, 0, "the stream reads the body, not the source's stream");
  });

  test('the whole representation too; a source without the bytes at hand streams as before', async () => {
    const whole = serve(get(), atHand(true), OPTIONS);
    assert.equal(whole.statusCode, 200);
    assert.ok(whole.body?.equals(BODY));
    const src = atHand(false);
    const streamed = serve(get({ range: 'bytes=0-9' }), src, OPTIONS);
    assert.equal(streamed.body, undefined);
    assert.ok((await readAll(streamed.stream!)).equals(BODY.subarray(0, 10)));
    assert.equal(src.opened.length, 1);
  });

  test('no body is read for HEAD, 304, 416 or several ranges', () => {
    const src = atHand(true);
    assert.equal(serve(head({ range: 'bytes=0-9' }), src, OPTIONS).body, undefined);
    assert.equal(serve(get({ 'if-none-match': '"RE1-1000"' }), src, OPTIONS).statusCode, 304);
    assert.equal(serve(get({ range: 'bytes=5000-' }), src, OPTIONS).statusCode, 416);
    const multi = serve(get({ range: 'bytes=0-9,20-29' }), src, OPTIONS);
    assert.equal(multi.body, undefined);
    multi.stream?.destroy();
    assert.deepEqual(src.asked, []);
  });
});
