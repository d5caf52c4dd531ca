/**
 * Open descriptors of finished recordings, kept across requests. A finished file never changes (it appears
 * by an atomic rename and is never rewritten), so a warm request needs no open, stat or close: one `pread`
 * per 64 KiB chunk from a descriptor opened once. Bounded LRU; a descriptor still read by a stream when it
 * is evicted closes when that stream ends.
 *
 * Consequence worth knowing: a finished file deleted by hand keeps being served from its open descriptor
 * until it is evicted or the process restarts.
 */
import { close, fstat, open, read } from 'node:fs';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { createError, storageError } from '../../errors.js';
import { takeChunk } from '../../serving/chunks.js';
import { type FileInfo, READ_CHUNK } from './store.js';

const openAsync = promisify(open);
const fstatAsync = promisify(fstat);

interface Entry {
  fd: number;
  info: FileInfo;
  /** Streams reading from `fd` now. */
  readers: number;
  /** Out of the map; `fd` closes when the last reader ends. */
  evicted: boolean;
}

export class FinalFiles {
  readonly #max: number;
  readonly #entries = new Map<string, Entry>();
  readonly #opening = new Map<string, Promise<Entry | undefined>>();
  #closed = false;

  /** @param max descriptors kept open at most. */
  constructor(max: number) {
    if (!Number.isInteger(max) || max < 1)
      throw new TypeError('options.maxOpenFiles must be a positive integer');
    this.#max = max;
  }

  /** The finished file at `path` (opening and remembering it), or `undefined` if there is none. */
  async stat(key: string, path: string): Promise<FileInfo | undefined> {
    const known = this.#touch(key);
    if (known !== undefined) return known.info;
    let pending = this.#opening.get(key);
    if (pending === undefined) {
      pending = this.#open(key, path).finally(() => this.#opening.delete(key));
      this.#opening.set(key, pending);
    }
    return (await pending)?.info;
  }

  /** Streams `start..end` from the remembered descriptor, or `undefined` if it is not open (evicted). */
  createReadStream(key: string, start: number, end: number): Readable | undefined {
    const entry = this.#touch(key);
    if (entry === undefined) return undefined;
    entry.readers++;
    let released = false;
    return new FdRange(entry.fd, start, end, () => {
      if (released) return;
      released = true;
      entry.readers--;
      if (entry.evicted && entry.readers === 0) close(entry.fd, () => undefined);
    });
  }

  /** Closes every descriptor no stream reads; the rest close as their streams end. */
  close(): void {
    this.#closed = true;
    for (const key of [...this.#entries.keys()]) this.#evict(key);
  }

  #touch(key: string): Entry | undefined {
    const entry = this.#entries.get(key);
    if (entry !== undefined) {
      this.#entries.delete(key);
      this.#entries.set(key, entry);
    }
    return entry;
  }

  async #open(key: string, path: string): Promise<Entry | undefined> {
    let fd: number;
    try {
      fd = await openAsync(path, 'r');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      throw storageError(err);
    }
    try {
      const st = await fstatAsync(fd, { bigint: true });
      const entry: Entry = {
        fd,
        info: { fileId: `${st.dev}:${st.ino}`, size: Number(st.size), mtime: new Date(Number(st.mtimeMs)) },
        readers: 0,
        evicted: false,
      };
      if (this.#closed) {
        entry.evicted = true;
        close(fd, () => undefined);
        return entry;
      }
      this.#entries.set(key, entry);
      while (this.#entries.size > this.#max) this.#evict(this.#entries.keys().next().value as string);
      return entry;
    } catch (err) {
      close(fd, () => undefined);
      throw storageError(err);
    }
  }

  #evict(key: string): void {
    const entry = this.#entries.get(key);
    if (entry === undefined) return;
    this.#entries.delete(key);
    entry.evicted = true;
    if (entry.readers === 0) close(entry.fd, () => undefined);
  }
}

/** Bytes `start..end` of an open descriptor by positional reads; a file shorter than promised is an error. */
class FdRange extends Readable {
  readonly #fd: number;
  #pos: number;
  readonly #end: number;
  readonly #release: () => void;

  constructor(fd: number, start: number, end: number, release: () => void) {
    super({ highWaterMark: READ_CHUNK });
    this.#fd = fd;
    this.#pos = start;
    this.#end = end;
    this.#release = release;
  }

  override _read(): void {
    const length = Math.min(READ_CHUNK, this.#end - this.#pos + 1);
    if (length <= 0) {
      this.push(null);
      return;
    }
    const buffer = takeChunk(length);
    read(this.#fd, buffer, 0, length, this.#pos, (err, bytesRead) => {
      if (this.destroyed) return;
      if (err) {
        this.destroy(storageError(err));
        return;
      }
      if (bytesRead === 0) {
        this.destroy(
          createError('RECGATE_STORAGE_ERROR', {
            cause: new Error(`recording ended early at byte ${this.#pos}`),
          }),
        );
        return;
      }
      this.#pos += bytesRead;
      this.push(bytesRead < length ? buffer.subarray(0, bytesRead) : buffer);
    });
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.#release();
    callback(err);
  }
}
