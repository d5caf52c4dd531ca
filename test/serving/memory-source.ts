/** An in-memory ByteSource for tests, which records the read streams it hands out. */
import { Readable } from 'node:stream';
import type { ByteSource } from '../../src/serving/source.js';

export interface MemorySource extends ByteSource {
  /** Every stream handed out, in order, with the range it was asked for. */
  readonly opened: { start: number; end: number; stream: Readable }[];
}

export interface MemorySourceOptions {
  etag?: string;
  lastModified?: Date;
  /** Bytes per pushed chunk. @default 4096 */
  chunkSize?: number;
  /** Replaces the stream for a range, to simulate stalls, errors and short reads. */
  override?: (start: number, end: number) => Readable | undefined;
}

export function memorySource(body: Buffer | string, options: MemorySourceOptions = {}): MemorySource {
  const bytes = typeof body === 'string' ? Buffer.from(body, 'latin1') : body;
  const chunkSize = options.chunkSize ?? 4096;
  const opened: MemorySource['opened'] = [];
  return {
    size: bytes.length,
    etag: options.etag ?? `"mem-${bytes.length}"`,
    lastModified: options.lastModified ?? new Date('2024-03-10T12:00:00Z'),
    opened,
    createReadStream(start: number, end: number): Readable {
      if (
        !(
          Number.isInteger(start) &&
          Number.isInteger(end) &&
          start >= 0 &&
          start <= end &&
          end < bytes.length
        )
      ) {
        throw new RangeError(`bad read ${start}-${end} of ${bytes.length}`);
      }
      let offset = start;
      const stream =
        options.override?.(start, end) ??
        new Readable({
          // One chunk per read call, so back-pressure is observable.
          read() {
            if (offset > end) {
              this.push(null);
              return;
            }
            const next = Math.min(offset + chunkSize, end + 1);
            const chunk = bytes.subarray(offset, next);
            offset = next;
            this.push(chunk);
          },
        });
      opened.push({ start, end, stream });
      return stream;
    },
  };
}

export { readAll } from '../helpers/common.js';

export interface ParsedPart {
  headers: Record<string, string>;
  body: Buffer;
}

/** Parses a multipart/byteranges body strictly: CRLFs, delimiters and close exactly where RFC 2046 puts them. */
export function parseMultipart(body: Buffer, boundary: string): ParsedPart[] {
  const text = body.toString('latin1');
  const delimiter = `--${boundary}`;
  if (!text.startsWith(`${delimiter}\r\n`)) throw new Error('body does not start with the boundary');
  const close = `\r\n${delimiter}--\r\n`;
  if (!text.endsWith(close)) throw new Error('body does not end with the close delimiter');
  const inner = text.slice(delimiter.length + 2, text.length - close.length);
  return inner.split(`\r\n${delimiter}\r\n`).map((part) => {
    const split = part.indexOf('\r\n\r\n');
    if (split === -1) throw new Error('part without a blank line');
    const headers: Record<string, string> = {};
    for (const line of part.slice(0, split).split('\r\n')) {
      const colon = line.indexOf(':');
      headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
    }
    return { headers, body: Buffer.from(part.slice(split + 4), 'latin1') };
  });
}

export function boundaryOf(contentType: string | undefined): string {
  const match = /^multipart\/byteranges; boundary=([0-9A-Za-z'()+_,\-./:=?]+)$/.exec(contentType ?? '');
  if (match === null) throw new Error(`not a multipart/byteranges type: ${contentType}`);
  return match[1]!;
}
