/**
 * A byte source the serving core can answer from: a finished file on disk, or a recording still being
 * downloaded whose total size is already known.
 */
import type { Readable } from 'node:stream';

export interface ByteSource {
  /** Total size in bytes; known before the first byte is served. */
  readonly size: number;
  /** Strong entity tag, quoted (`"RE…-12345"`). */
  readonly etag: string;
  /** Last-Modified date; HTTP dates have one-second resolution. */
  readonly lastModified: Date;
  /**
   * Streams bytes `start..end` (both inclusive). For an in-flight download the stream delivers bytes as
   * they land and errors, never ends short, if the download fails. Reads in constant memory.
   */
  createReadStream(start: number, end: number): Readable;
  /**
   * Optional. Bytes `start..end` (both inclusive) at once, when the source has them at hand and the range is
   * small (a cached file's descriptor, one read chunk); `undefined` otherwise, and the bytes are streamed.
   * The buffer may come from the chunk pool (`io/chunks.ts`): whoever writes it gives it back once flushed.
   */
  readNow?(start: number, end: number): Buffer | undefined;
}
