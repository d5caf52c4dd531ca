import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { Mp3Encoder } from '@breezystack/lamejs';
import fc from 'fast-check';
import { generateMp3, generateWav, MP3_FRAME_BYTES, minMp3Bytes } from '../../src/emulator/audio.js';
import {
  type ContentTypeVerdict,
  checkContentType,
  DEFAULT_MAX_TAG_BYTES,
  declaredTypeConflict,
  FrameWalker,
  type FramingResult,
  MAX_ZERO_PADDING,
  MediaSniffer,
  SNIFF_WINDOW_BYTES,
  type SniffResult,
  sniffMedia,
  walkFrames,
} from '../../src/recordings/media-check.js';
import { walkMp3 } from '../emulator/mp3-frames.js';

const SEED = 'REmediacheck';

/** The emulator's MP3: an ID3v2.3 tag, then seven MPEG-2 Layer III frames of 144 bytes. */
const emulatorMp3 = generateMp3({ seed: SEED, bytes: minMp3Bytes(SEED) + 6 * MP3_FRAME_BYTES });
const tagged = emulatorMp3.data;
const bare = tagged.subarray(emulatorMp3.tagBytes);
/** MPEG-1 Layer III, 44.1 kHz stereo at 128 kbps: 417- and 418-byte frames (the padding bit varies). */
const mpeg1 = encodeMpeg1(0.5);
const wav = generateWav({ seed: SEED, durationS: 0.05 }).data;

function encodeMpeg1(seconds: number): Buffer {
  const rate = 44_100;
  const encoder = new Mp3Encoder(2, rate, 128);
  const n = Math.round(rate * seconds);
  const left = new Int16Array(n);
  const right = new Int16Array(n);
  for (let i = 0; i < n; i++) {
    left[i] = Math.round(8000 * Math.sin(i * 0.05));
    right[i] = Math.round(6000 * Math.sin(i * 0.031));
  }
  const parts: Buffer[] = [];
  for (let i = 0; i < n; i += 1152) {
    parts.push(Buffer.from(encoder.encodeBuffer(left.subarray(i, i + 1152), right.subarray(i, i + 1152))));
  }
  parts.push(Buffer.from(encoder.flush()));
  return Buffer.concat(parts);
}

/** An ID3v2 tag of `size` body bytes (zero padding), with a v2.4 footer when asked. */
function id3v2(
  size: number,
  { major = 3, footer = false }: { major?: number; footer?: boolean } = {},
): Buffer {
  const syncsafe = [(size >>> 21) & 0x7f, (size >>> 14) & 0x7f, (size >>> 7) & 0x7f, size & 0x7f];
  const header = Buffer.from([0x49, 0x44, 0x33, major, 0, footer ? 0x10 : 0, ...syncsafe]);
  const parts = [header, Buffer.alloc(size)];
  if (footer) parts.push(Buffer.from([0x33, 0x44, 0x49, major, 0, 0x10, ...syncsafe]));
  return Buffer.concat(parts);
}

function id3v1(title: string): Buffer {
  const block = Buffer.alloc(128);
  block.write('TAG', 0, 'latin1');
  block.write(title, 3, 'latin1');
  return block;
}

interface Fixture {
  name: string;
  data: Buffer;
  format: 'mp3' | 'wav';
  /** Every length a cut may leave for the framing to call the body complete. */
  completeAt: Set<number>;
}

function mp3Fixture(name: string, prefix: Buffer, frames: Buffer, suffix: Buffer = Buffer.alloc(0)): Fixture {
  const walk = walkMp3(frames);
  const ends = [...walk.offsets.slice(1), frames.length].map((end) => prefix.length + end);
  if (suffix.length > 0) ends.push(prefix.length + frames.length + suffix.length);
  return { name, data: Buffer.concat([prefix, frames, suffix]), format: 'mp3', completeAt: new Set(ends) };
}

const fixtures: Fixture[] = [
  mp3Fixture("the emulator's MP3 (ID3v2.3 tag)", tagged.subarray(0, emulatorMp3.tagBytes), bare),
  mp3Fixture("the emulator's MP3 without its tag", Buffer.alloc(0), bare),
  mp3Fixture('MPEG-1 with padded frames', Buffer.alloc(0), mpeg1),
  mp3Fixture('an MP3 ending in an ID3v1 tag', Buffer.alloc(0), bare, id3v1('recgate')),
  mp3Fixture('an ID3v2.4 tag with a footer', id3v2(20, { major: 4, footer: true }), bare),
  mp3Fixture('two ID3v2 tags', Buffer.concat([id3v2(30), id3v2(5, { major: 4 })]), bare),
  mp3Fixture('zero padding after the tag', Buffer.concat([id3v2(30), Buffer.alloc(300)]), bare),
  { name: "the emulator's WAV", data: wav, format: 'wav', completeAt: new Set([wav.length]) },
];

const HTML_PAGE = Buffer.from(
  `<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Twilio - Service Temporarily Unavailable</title>
  <style>body { font-family: sans-serif; color: #121c2d; }</style>
</head>
<body>
  <h1>We're sorry, something went wrong.</h1>
  <p>Twilio is experiencing a temporary problem. Please try again in a few minutes.</p>
  <p>Request ID: RQ0123456789abcdef0123456789abcdef</p>
</body>
</html>
`,
);
const TWILIO_JSON = Buffer.from(
  '{"code": 20404, "message": "The requested resource /2010-04-01/Accounts/AC1/Recordings/RE1.mp3 was not found", "more_info": "https://www.twilio.com/docs/errors/20404", "status": 404}',
);
const TWILIO_XML = Buffer.from(
  "<?xml version='1.0' encoding='UTF-8'?>\n<TwilioResponse><RestException><Code>20003</Code><Message>Authenticate</Message></RestException></TwilioResponse>",
);

/** Splits `data` at the given positions (taken modulo its length, in any order). */
function split(data: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => (data.length === 0 ? 0 : c % (data.length + 1))))].sort(
    (a, b) => a - b,
  );
  const chunks: Uint8Array[] = [];
  let from = 0;
  for (const p of points) {
    chunks.push(data.subarray(from, p));
    from = p;
  }
  chunks.push(data.subarray(from));
  return chunks;
}

function sniffChunks(chunks: Uint8Array[]): SniffResult {
  const sniffer = new MediaSniffer();
  for (const chunk of chunks) sniffer.push(chunk);
  return sniffer.end();
}

function walkChunks(chunks: Uint8Array[]): FramingResult {
  const walker = new FrameWalker();
  for (const chunk of chunks) walker.push(chunk);
  return walker.end();
}

function bytewise(data: Uint8Array): Uint8Array[] {
  return Array.from(data, (_, i) => data.subarray(i, i + 1));
}

function expectBad(result: SniffResult, pattern: RegExp): void {
  assert.equal(result.kind, 'bad', JSON.stringify(result));
  assert.match((result as { reason: string }).reason, pattern);
}

describe('checkContentType', () => {
  const cases: Array<[string | null | undefined, ContentTypeVerdict]> = [
    ['audio/mpeg', 'mp3'],
    ['Audio/MPEG', 'mp3'],
    ['audio/mpeg; charset=binary', 'mp3'],
    ['  audio/mpeg  ;foo="bar"', 'mp3'],
    ['audio/mp3', 'mp3'],
    ['audio/mpeg3', 'mp3'],
    ['audio/x-mpeg', 'mp3'],
    ['audio/x-wav', 'wav'],
    ['audio/wav', 'wav'],
    ['audio/wave', 'wav'],
    ['AUDIO/VND.WAVE; codec=1', 'wav'],
    [null, 'unknown'],
    [undefined, 'unknown'],
    ['', 'unknown'],
    ['   ', 'unknown'],
    ['; charset=utf-8', 'unknown'],
    ['mpeg', 'unknown'],
    ['audio/mpeg/extra', 'unknown'],
    ['application/octet-stream', 'unknown'],
    ['Binary/Octet-Stream', 'unknown'],
    ['text/html; charset=utf-8', 'bad'],
    ['text/html', 'bad'],
    ['text/plain', 'bad'],
    ['text/xml', 'bad'],
    ['application/json', 'bad'],
    ['application/problem+json', 'bad'],
    ['application/xml', 'bad'],
    ['application/xhtml+xml', 'bad'],
    ['audio/ogg', 'bad'],
    ['video/mpeg', 'bad'],
  ];
  for (const [header, expected] of cases) {
    test(`${JSON.stringify(header)} is ${expected}`, () => {
      assert.equal(checkContentType(header), expected);
    });
  }

  test('never throws, whatever the header', () => {
    fc.assert(fc.property(fc.string(), (s) => void checkContentType(s)));
  });
});

describe('declaredTypeConflict', () => {
  test('an unknown type agrees with any format, a declared one only with its own', () => {
    assert.equal(declaredTypeConflict('unknown', 'mp3'), null);
    assert.equal(declaredTypeConflict('unknown', 'wav'), null);
    assert.equal(declaredTypeConflict('mp3', 'mp3'), null);
    assert.equal(declaredTypeConflict('wav', 'wav'), null);
    assert.equal(declaredTypeConflict('mp3', 'wav'), 'the Content-Type says MP3 but the body is WAV');
    assert.equal(declaredTypeConflict('wav', 'mp3'), 'the Content-Type says WAV but the body is MP3');
    assert.match(declaredTypeConflict('bad', 'mp3')!, /not MP3 or WAV/);
  });
});

describe('MediaSniffer', () => {
  for (const fixture of fixtures) {
    test(`${fixture.name}: ok, whole, split at every position, and byte by byte`, () => {
      const expected = { kind: 'ok', format: fixture.format };
      assert.deepEqual(sniffMedia(fixture.data), expected);
      for (let at = 0; at <= fixture.data.length; at++) {
        assert.deepEqual(sniffChunks(split(fixture.data, [at])), expected, `split at ${at}`);
      }
      assert.deepEqual(sniffChunks(bytewise(fixture.data)), expected);
    });
  }

  test('answers as soon as the second frame header is in, and not before', () => {
    const enough = emulatorMp3.tagBytes + MP3_FRAME_BYTES + 4;
    assert.deepEqual(new MediaSniffer().push(tagged.subarray(0, enough)), { kind: 'ok', format: 'mp3' });
    assert.deepEqual(new MediaSniffer().push(tagged.subarray(0, enough - 1)), { kind: 'need-more' });
    assert.deepEqual(new MediaSniffer().push(wav.subarray(0, 12)), { kind: 'ok', format: 'wav' });
    assert.deepEqual(new MediaSniffer().push(wav.subarray(0, 11)), { kind: 'need-more' });
  });

  test('keeps its answer once given, and ignores later chunks', () => {
    const sniffer = new MediaSniffer();
    assert.equal(sniffer.push(tagged).kind, 'ok');
    assert.equal(sniffer.push(HTML_PAGE).kind, 'ok');
    assert.equal(sniffer.end().kind, 'ok');
    const rejecting = new MediaSniffer();
    assert.equal(rejecting.push(TWILIO_JSON.subarray(0, 10)).kind, 'need-more', 'describes from 512 bytes');
    assert.equal(rejecting.push(Buffer.alloc(600, 0x20)).kind, 'bad');
    assert.equal(rejecting.push(tagged).kind, 'bad');
    assert.equal(rejecting.end().kind, 'bad');
  });

  test('a single whole frame, or a frame and an ID3v1 tag, is an MP3', () => {
    assert.deepEqual(sniffMedia(bare.subarray(0, MP3_FRAME_BYTES)), { kind: 'ok', format: 'mp3' });
    const frameAndTag = Buffer.concat([bare.subarray(0, MP3_FRAME_BYTES), id3v1('x')]);
    assert.deepEqual(sniffMedia(frameAndTag), { kind: 'ok', format: 'mp3' });
  });

  describe('rejects what is not a recording, with a readable reason', () => {
    test('an empty body', () => {
      expectBad(sniffMedia(Buffer.alloc(0)), /^an empty body$/);
    });

    test('an HTML error page, by its title', () => {
      expectBad(
        sniffMedia(HTML_PAGE),
        /^an HTML page, not MP3 or WAV audio, titled Twilio - Service Temporarily Unavailable$/,
      );
      const untitled = Buffer.from('\ufeff \n<html><body><h1>502 Bad Gateway</h1></body></html>');
      expectBad(sniffMedia(untitled), /^an HTML page, not MP3 or WAV audio, starting <html><body><h1>502/);
    });

    test("Twilio's JSON and XML error bodies", () => {
      expectBad(sniffMedia(TWILIO_JSON), /^JSON, not MP3 or WAV audio, starting \{"code": 20404, "message"/);
      expectBad(sniffMedia(TWILIO_XML), /^an XML document, not MP3 or WAV audio, starting <\?xml/);
    });

    test('plain text', () => {
      expectBad(
        sniffMedia(Buffer.from('Internal Server Error\r\n')),
        /^text, .* starting Internal Server Error$/,
      );
      expectBad(sniffMedia(Buffer.from('I')), /^text, /);
      expectBad(sniffMedia(Buffer.from('RIF')), /^text, /);
    });

    test('long excerpts are cut to 80 characters', () => {
      const result = sniffMedia(Buffer.from(`Error: ${'x'.repeat(600)}`));
      expectBad(result, /starting Error: x+\.\.\.$/);
      assert.ok((result as { reason: string }).reason.endsWith(`${'x'.repeat(70)}...`));
    });

    test('unrecognised binary data, by its first bytes', () => {
      const garbage = Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03]);
      expectBad(sniffMedia(garbage), /^neither MP3 nor WAV: the body starts with bytes 1f 8b 08 00/);
    });

    test('an invalid first frame header', () => {
      expectBad(sniffMedia(Buffer.from([0xff, 0xfb, 0xf0, 0x00, 0, 0])), /invalid bitrate index 15/);
      expectBad(sniffMedia(Buffer.from([0xff, 0xfb, 0x00, 0x00, 0, 0])), /free-format bitrate/);
      expectBad(
        sniffMedia(Buffer.from([0xff, 0xe4, 0x90, 0x00, 0, 0])),
        /MPEG-2\.5 with a layer other than III/,
      );
      expectBad(sniffMedia(Buffer.from([0xff, 0xfb, 0x9c, 0x00, 0, 0])), /reserved sampling-rate index/);
      expectBad(sniffMedia(Buffer.from([0xff, 0x0b, 0x90, 0x00, 0, 0])), /no 11-bit frame sync/);
    });

    test('a first frame not followed by another frame header', () => {
      const junk = Buffer.concat([bare.subarray(0, MP3_FRAME_BYTES), Buffer.from('junk after the frame')]);
      expectBad(sniffMedia(junk), /^not MPEG audio: the frame at byte 0 is not followed by .* at byte 144$/);
      const otherStream = Buffer.concat([bare.subarray(0, MP3_FRAME_BYTES), mpeg1]);
      expectBad(sniffMedia(otherStream), /not followed by another frame header/);
    });

    test('a body that ends inside its first frame or the RIFF header', () => {
      expectBad(
        sniffMedia(bare.subarray(0, 100)),
        /^the body ends inside the first MPEG frame \(100 of its 144/,
      );
      expectBad(sniffMedia(bare.subarray(0, 3)), /ends inside the first MPEG frame header/);
      expectBad(sniffMedia(wav.subarray(0, 10)), /^the body ends inside the RIFF header$/);
    });

    test('a RIFF file that is not WAVE, and a WAV behind an ID3 tag', () => {
      const avi = Buffer.concat([Buffer.from('RIFF'), Buffer.alloc(4, 1), Buffer.from('AVI LIST')]);
      expectBad(sniffMedia(avi), /^a RIFF file of form "AVI ", not WAVE$/);
      expectBad(sniffMedia(Buffer.concat([id3v2(10), wav])), /neither MP3 nor WAV \(from byte 20\)/);
    });

    test('ID3v2 tags: too large, never ending, malformed, or with nothing after them', () => {
      const huge = id3v2(0).subarray(0, 10);
      huge.set([0x01, 0x00, 0x00, 0x00], 6);
      const sniffer = new MediaSniffer();
      expectBad(
        sniffer.push(huge),
        /^ID3v2 tags of 2097162 bytes before the audio, more than the 1048576 allowed$/,
      );
      expectBad(new MediaSniffer({ maxTagBytes: 100 }).push(id3v2(91)), /more than the 100 allowed/);
      assert.equal(new MediaSniffer({ maxTagBytes: 101 }).push(id3v2(91)).kind, 'need-more');
      expectBad(
        sniffMedia(Buffer.concat([id3v2(60), id3v2(DEFAULT_MAX_TAG_BYTES - 60)])),
        /more than the 1048576 allowed/,
      );

      const endless = new MediaSniffer();
      assert.equal(endless.push(id3v2(100_000).subarray(0, 50_000)).kind, 'need-more');
      expectBad(
        endless.end(),
        /^the body ends inside an ID3v2 tag, 50010 bytes short of its end at byte 100010$/,
      );
      expectBad(sniffMedia(id3v2(0).subarray(0, 7)), /ends inside an ID3v2 tag header/);

      const malformed = Buffer.from(id3v2(10));
      malformed[3] = 9;
      expectBad(sniffMedia(malformed), /^a malformed ID3v2 tag header at byte 0: unknown version 2\.9$/);
      malformed[3] = 3;
      malformed[8] = 0x80;
      expectBad(sniffMedia(malformed), /not syncsafe/);

      expectBad(sniffMedia(id3v2(30)), /^an ID3v2 tag with nothing after it$/);
      expectBad(
        sniffMedia(Buffer.concat([id3v2(30), Buffer.alloc(100)])),
        /^only zero bytes after the ID3v2 tag$/,
      );
      expectBad(sniffMedia(Buffer.concat([id3v2(30), HTML_PAGE])), /^an HTML page \(from byte 40\)/);
    });

    test('more zero padding after the tag than allowed', () => {
      const padded = Buffer.concat([id3v2(30), Buffer.alloc(MAX_ZERO_PADDING + 1), bare]);
      expectBad(sniffMedia(padded), /more than 2048 zero bytes after the ID3v2 tag/);
      const justEnough = Buffer.concat([id3v2(30), Buffer.alloc(MAX_ZERO_PADDING), bare]);
      assert.deepEqual(sniffMedia(justEnough), { kind: 'ok', format: 'mp3' });
    });
  });

  test('validates its options, naming the field', () => {
    assert.throws(() => new MediaSniffer({ maxTagBytes: 5 }), /options\.maxTagBytes/);
    assert.throws(() => new MediaSniffer({ maxTagBytes: 1.5 }), /options\.maxTagBytes/);
  });

  test('property: chunking never changes the answer, reason included', () => {
    const inputs = fc.oneof(
      fc.constantFrom(
        ...fixtures.map((f) => f.data),
        HTML_PAGE,
        TWILIO_JSON,
        TWILIO_XML,
        Buffer.concat([id3v2(30), HTML_PAGE]),
      ),
      fc.uint8Array({ maxLength: 2000 }),
      fc
        .tuple(fc.constantFrom(...fixtures.map((f) => f.data)), fc.nat())
        .map(([data, cut]) => data.subarray(0, cut % (data.length + 1))),
    );
    fc.assert(
      fc.property(inputs, fc.array(fc.nat(), { maxLength: 12 }), (data, cuts) => {
        assert.deepEqual(sniffChunks(split(data, cuts)), sniffMedia(data));
      }),
      { numRuns: 500 },
    );
  });

  test('property: the first answer that is not need-more is the final one', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1500 }), fc.array(fc.nat(), { maxLength: 8 }), (data, cuts) => {
        const sniffer = new MediaSniffer();
        let first: SniffResult | undefined;
        for (const chunk of split(data, cuts)) {
          const answer = sniffer.push(chunk);
          if (first === undefined && answer.kind !== 'need-more') first = answer;
        }
        const final = sniffer.end();
        if (first !== undefined) assert.deepEqual(final, first);
        assert.notEqual(final.kind, 'need-more');
      }),
      { numRuns: 500 },
    );
  });

  test('property: buffers a bounded window: answers within the window after the tags', () => {
    const bodies = fc.tuple(
      fc.constantFrom(
        Buffer.alloc(0),
        id3v2(40),
        Buffer.concat([id3v2(100), id3v2(7, { major: 4, footer: true })]),
      ),
      fc.uint8Array({ minLength: SNIFF_WINDOW_BYTES, maxLength: SNIFF_WINDOW_BYTES + 100 }),
      fc.constantFrom(0x00, 0xff, 0x52, 0x3c, 0x7b),
    );
    fc.assert(
      fc.property(bodies, ([tag, rest, first]) => {
        const body = Buffer.concat([tag, Buffer.from([first]), rest]);
        assert.notEqual(
          new MediaSniffer().push(body.subarray(0, tag.length + SNIFF_WINDOW_BYTES)).kind,
          'need-more',
        );
      }),
      { numRuns: 300 },
    );
  });

  test('property: reasons are short printable ASCII', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1000 }), (data) => {
        const result = sniffMedia(data);
        if (result.kind === 'bad') {
          assert.match(result.reason, /^[\x20-\x7e]+$/);
          assert.ok(result.reason.length < 250, result.reason);
        }
      }),
      { numRuns: 300 },
    );
  });

  test('random garbage is rejected', () => {
    for (let i = 0; i < 50; i++) {
      const data = randomBytes(2000);
      if (data[0] === 0xff || data[0] === 0x49 || data[0] === 0x52) data[0] = 0x00;
      assert.equal(sniffMedia(data).kind, 'bad');
    }
  });
});

describe('FrameWalker', () => {
  for (const fixture of fixtures) {
    test(`${fixture.name}: complete, and every cut but at a frame boundary is truncated`, () => {
      assert.deepEqual(walkFrames(fixture.data), { kind: 'complete', format: fixture.format });
      for (let cut = 0; cut < fixture.data.length; cut++) {
        const result = walkFrames(fixture.data.subarray(0, cut));
        const expected = fixture.completeAt.has(cut) ? 'complete' : 'truncated';
        assert.equal(result.kind, expected, `cut at ${cut}: ${JSON.stringify(result)}`);
      }
    });
  }

  test("counts the emulator's frames", () => {
    const walker = new FrameWalker();
    walker.push(tagged);
    assert.equal(walker.frames, emulatorMp3.frames);
    assert.equal(walker.bytes, tagged.length);
    assert.equal(
      walkMp3(mpeg1).frames,
      (() => {
        const w = new FrameWalker();
        for (const chunk of bytewise(mpeg1)) w.push(chunk);
        return w.frames;
      })(),
    );
  });

  test('says where a body was cut', () => {
    const cut = emulatorMp3.tagBytes + 2 * MP3_FRAME_BYTES + 50;
    assert.deepEqual(walkFrames(tagged.subarray(0, cut)), {
      kind: 'truncated',
      reason: `the body ends 50 bytes into the 144-byte MPEG frame at byte ${cut - 50}`,
    });
    assert.deepEqual(walkFrames(tagged.subarray(0, 20)), {
      kind: 'truncated',
      reason: `the body ends inside the ${emulatorMp3.tagBytes}-byte ID3v2 tag at byte 0`,
    });
    assert.deepEqual(walkFrames(Buffer.alloc(0)), {
      kind: 'truncated',
      reason: 'the body ends at byte 0, before any audio',
    });
    assert.deepEqual(walkFrames(wav.subarray(0, 500)), {
      kind: 'truncated',
      reason: `the body ends at byte 500 of the ${wav.length} its RIFF size gives`,
    });
  });

  describe('answers unknown, not truncated, when it cannot judge', () => {
    const unknown = (data: Buffer, pattern: RegExp) => {
      const result = walkFrames(data);
      assert.equal(result.kind, 'unknown', JSON.stringify(result));
      assert.match((result as { reason: string }).reason, pattern);
    };

    test('junk between frames (it stops walking there, even if the body is then cut)', () => {
      const junk = Buffer.concat([bare.subarray(0, 288), Buffer.from('junk!!!'), bare.subarray(288)]);
      unknown(junk, /^lost frame sync at byte 288 after 2 frames/);
      unknown(junk.subarray(0, junk.length - 10), /^lost frame sync at byte 288/);
    });

    test('a frame of another stream (version, layer or sampling rate changes)', () => {
      unknown(
        Buffer.concat([bare, mpeg1]),
        new RegExp(`lost frame sync at byte ${bare.length} after 7 frames`),
      );
    });

    test('an APEv2 tag, or bytes after the ID3v1 tag', () => {
      unknown(Buffer.concat([bare, Buffer.from('APETAGEX'), Buffer.alloc(24)]), /lost frame sync/);
      unknown(Buffer.concat([bare, id3v1('a'), Buffer.from('more')]), /bytes after the ID3v1 tag/);
    });

    test('bodies that are not MP3 or WAV', () => {
      unknown(HTML_PAGE, /^neither MP3 nor WAV$/);
      unknown(Buffer.concat([id3v2(30), HTML_PAGE]), /^no MPEG frame after the ID3v2 tag$/);
      unknown(
        Buffer.concat([id3v2(30), Buffer.alloc(MAX_ZERO_PADDING + 1), bare]),
        /more than 2048 zero bytes/,
      );
      const malformed = Buffer.from(id3v2(10));
      malformed[4] = 0xff;
      unknown(malformed, /malformed ID3v2 tag header at byte 0: revision 0xFF/);
    });

    test('WAV: more bytes than the RIFF size, a placeholder size, another RIFF form', () => {
      unknown(Buffer.concat([wav, Buffer.alloc(3)]), /^the body runs 3 bytes beyond the 844/);
      const streamed = Buffer.from(wav);
      streamed.writeUInt32LE(0xffffffff, 4);
      unknown(streamed, /placeholder/);
      streamed.writeUInt32LE(0, 4);
      unknown(streamed, /placeholder/);
      const avi = Buffer.from(wav);
      avi.write('AVI ', 8, 'latin1');
      unknown(avi, /form "AVI ", not WAVE/);
    });
  });

  test('property: chunking never changes the answer', () => {
    const inputs = fc.oneof(
      fc.constantFrom(...fixtures.map((f) => f.data), HTML_PAGE),
      fc.uint8Array({ maxLength: 2000 }),
      fc
        .tuple(fc.constantFrom(...fixtures.map((f) => f.data)), fc.nat(), fc.uint8Array({ maxLength: 20 }))
        .map(([data, at, junk]) => {
          const i = at % (data.length + 1);
          return Buffer.concat([data.subarray(0, i), junk, data.subarray(i)]);
        }),
    );
    fc.assert(
      fc.property(inputs, fc.array(fc.nat(), { maxLength: 12 }), (data, cuts) => {
        const whole = walkFrames(data);
        assert.deepEqual(walkChunks(split(data, cuts)), whole);
        // Byte by byte, no header is ever whole inside a chunk: the walker's slow path alone.
        assert.deepEqual(walkChunks(bytewise(data)), whole);
      }),
      { numRuns: 500 },
    );
  });

  test('property: a longer recording cut off the frame grid is truncated, in any chunking', () => {
    const long = generateMp3({ seed: 'REmediacheck-long', bytes: 400_000 });
    const frames = walkMp3(long.data);
    const boundaries = new Set([...frames.offsets.slice(1), long.data.length]);
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: long.data.length - 1 }),
        fc.array(fc.nat(), { maxLength: 6 }),
        (cut, cuts) => {
          const body = long.data.subarray(0, cut);
          const result = walkChunks(split(body, cuts));
          assert.equal(result.kind, boundaries.has(cut) ? 'complete' : 'truncated', `cut at ${cut}`);
        },
      ),
      { numRuns: 300 },
    );
  });

  test('walks a 50 MB MP3 in 64 KiB chunks, fast', () => {
    const big = generateMp3({ seed: 'REmediacheck-big', bytes: 50_000_000 });
    const started = performance.now();
    const walker = new FrameWalker();
    for (let offset = 0; offset < big.data.length; offset += 65_536) {
      walker.push(big.data.subarray(offset, offset + 65_536));
    }
    const result = walker.end();
    const elapsed = performance.now() - started;
    assert.deepEqual(result, { kind: 'complete', format: 'mp3' });
    assert.equal(walker.frames, big.frames);
    // About 10 ms on a busy 2-core machine (4 GB/s); the bound only catches a walk that reads every byte.
    assert.ok(elapsed < 1_000, `took ${elapsed} ms`);
  });
});
