/**
 * Open descriptors of finished recordings, kept across requests. A finished file never changes (it appears
 * by an atomic rename and is never rewritten), so a warm request needs no open, stat or close: one `pread`
 * per 64 KiB chunk from a descriptor opened once. Bounded LRU; a descriptor still read by a stream when it
 * is evicted closes when that stream ends.
 *
 * A file may be replaced by a newer one under the same name (another recording for the call, or a download
 * that repaired a file of unknown identity); `stat(…, fresh)` looks at the name again, and a stream asked for
 * with a `fileId` never reads a file other than that one.
 *
 * A file removed on purpose (bounded-disk eviction, here or in another process) is **retired**: its
 * descriptor leaves the map, so new requests look at the name again, but stays open for a grace period, so a
 * request that found the file a moment before the removal still streams every byte of it (POSIX keeps an
 * unlinked file's bytes while a descriptor is open). {@link FinalFiles.prune}, run periodically, retires
 * descriptors of files another process removed (link count 0) and closes retired ones past the grace, so
 * removed files do not keep their disk space.
 *
 * Consequence worth knowing: a finished file deleted by hand keeps being served from its open descriptor
 * until it is evicted, pruned, looked at afresh, or the process restarts.
 */
import type { BigIntStats } from 'node:fs';
import { close, fstat, fstatSync, open, read } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { createError, storageError } from '../../errors.js';
import { takeChunk } from '../../io/chunks.js';
import { type FinalIdentity, type FinalInfo, READ_CHUNK } from './store.js';

const openAsync = promisify(open);
const fstatAsync = promisify(fstat);

/** Reads what a finished file holds (its identity record), given the file's stats; `undefined` if unknown. */
export type DescribeFinal = (key: string, stats: BigIntStats) => Promise<FinalIdentity | undefined>;

interface Entry {
  fd: number;
  info: FinalInfo;
  /** Streams reading from `fd` now. */
  readers: number;
  /** Out of the map; `fd` closes when the last reader ends. */
  evicted: boolean;
  /** When the entry was retired (performance.now()), if it was. */
  retiredAt: number | undefined;
}

/** How long a retired descriptor stays open for requests that found it just before its file was removed. */
const RETIRED_GRACE_MS = 10_000;

export class FinalFiles {
  readonly #max: number;
  readonly #describe: DescribeFinal;
  readonly #entries = new Map<string, Entry>();
  readonly #opening = new Map<string, Promise<Entry | undefined>>();
  /** Retired entries by file id; see the file's comment. */
  readonly #retired = new Map<string, Entry>();
  #closed = false;

  /**
   * @param max descriptors kept open at most.
   * @param describe reads a file's identity when it is opened. @default none: every identity is unknown
   */
  constructor(max: number, describe: DescribeFinal = async () => undefined) {
    if (!Number.isInteger(max) || max < 1)
      throw new TypeError('options.maxOpenFiles must be a positive integer');
    this.#max = max;
    this.#describe = describe;
  }

  /**
   * The finished file at `path` (opening and remembering it), or `undefined` if there is none. `fresh` drops
   * what is remembered first, so a file that replaced the remembered one is seen.
   */
  async stat(key: string, path: string, fresh = false): Promise<FinalInfo | undefined> {
    if (fresh) {
      // A pending open started before the caller asked for a fresh look may have read the old file.
      await this.#opening.get(key)?.catch(() => undefined);
      this.#evict(key);
    }
    const known = this.#touch(key);
    if (known !== undefined) return known.info;
    let pending = this.#opening.get(key);
    if (pending === undefined) {
      pending = this.#open(key, path).finally(() => this.#opening.delete(key));
      this.#opening.set(key, pending);
    }
    return (await pending)?.info;
  }

  /**
   * Streams `start..end` from the remembered descriptor, or `undefined` if none is open, or (with `fileId`)
   * the one open is another file.
   */
  createReadStream(key: string, start: number, end: number, fileId?: string): Readable | undefined {
    let entry = this.#touch(key);
    if (fileId !== undefined && entry?.info.fileId !== fileId) entry = this.#retired.get(fileId);
    if (entry === undefined) return undefined;
    entry.readers++;
    let released = false;
    return new FdRange(entry.fd, start, end, () => {
      if (released) return;
      released = true;
      entry.readers--;
      // A retired descriptor stays open for its grace period; prune() closes it then.
      if (entry.evicted && entry.readers === 0 && entry.retiredAt === undefined)
        close(entry.fd, () => undefined);
    });
  }

  /** Closes every descriptor no stream reads; the rest close as their streams end. */
  close(): void {
    this.#closed = true;
    for (const key of [...this.#entries.keys()]) this.#evict(key);
    this.prune(Number.POSITIVE_INFINITY);
  }

  /**
   * The file under `key` was removed on purpose: new requests look at the name again; requests that found
   * it keep reading it for a grace period.
   */
  retire(key: string): void {
    const entry = this.#entries.get(key);
    if (entry === undefined) return;
    this.#entries.delete(key);
    entry.evicted = true;
    entry.retiredAt = performance.now();
    this.#retired.set(entry.info.fileId, entry);
  }

  /**
   * Retires descriptors whose file was unlinked (by another process), then closes retired descriptors
   * older than the grace period that no stream reads. Cheap: one `fstat` per open descriptor.
   */
  prune(now = performance.now()): void {
    for (const [key, entry] of [...this.#entries]) {
      let links: number;
      try {
        links = fstatSync(entry.fd).nlink;
      } catch {
        links = 0;
      }
      if (links === 0) this.retire(key);
    }
    for (const [fileId, entry] of this.#retired) {
      if (now - (entry.retiredAt ?? 0) < RETIRED_GRACE_MS) continue;
      this.#retired.delete(fileId);
      entry.retiredAt = undefined;
      if (entry.readers === 0) close(entry.fd, () => undefined);
    }
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
      if (isMissing(err)) return undefined;
      throw storageError(err);
    }
    try {
      const st = await fstatAsync(fd, { bigint: true });
      const entry: Entry = {
        fd,
        info: { ...fileInfo(st), identity: await this.#describe(key, st) },
        readers: 0,
        evicted: false,
        retiredAt: undefined,
      };
      if (this.#closed) {
        entry.evicted = true;
        close(fd, () => undefined);
        return entry;
      }
      this.#evict(key);
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

/** A file's id within this host (device and inode), size and mtime. */
export function fileInfo(st: BigIntStats): { fileId: string; size: number; mtime: Date } {
  return { fileId: `${st.dev}:${st.ino}`, size: Number(st.size), mtime: new Date(Number(st.mtimeMs)) };
}

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/**
 * Bytes `start..end` of a file by positional reads; a file shorter than promised is an error. Reads from a
 * descriptor it is given, or opens `path` itself (closing it at the end) and, with `fileId`, refuses a file
 * that is not that one.
 */
export class FdRange extends Readable {
  #fd: number | undefined;
  #pos: number;
  readonly #end: number;
  readonly #release: (() => void) | undefined;
  readonly #path: string | undefined;
  readonly #fileId: string | undefined;

  constructor(fd: number, start: number, end: number, release: () => void);
  constructor(path: string, start: number, end: number, release: undefined, fileId?: string);
  constructor(
    source: number | string,
    start: number,
    end: number,
    release: (() => void) | undefined,
    fileId?: string,
  ) {
    super({ highWaterMark: READ_CHUNK });
    if (typeof source === 'number') this.#fd = source;
    else this.#path = source;
    this.#pos = start;
    this.#end = end;
    this.#release = release;
    this.#fileId = fileId;
  }

  override _construct(callback: (err?: Error | null) => void): void {
    if (this.#path === undefined) {
      callback();
      return;
    }
    open(this.#path, 'r', (err, fd) => {
      if (err) {
        callback(storageError(err));
        return;
      }
      this.#fd = fd;
      if (this.#fileId === undefined) {
        callback();
        return;
      }
      fstat(fd, { bigint: true }, (statErr, st) => {
        if (statErr) callback(storageError(statErr));
        else if (fileInfo(st).fileId !== this.#fileId) {
          callback(
            createError('RECGATE_STORAGE_ERROR', {
              cause: new Error('the recording was replaced while it was being served'),
            }),
          );
        } else callback();
      });
    });
  }

  override _read(): void {
    const length = Math.min(READ_CHUNK, this.#end - this.#pos + 1);
    if (length <= 0) {
      this.push(null);
      return;
    }
    const buffer = takeChunk(length);
    read(this.#fd!, buffer, 0, length, this.#pos, (err, bytesRead) => {
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
    if (this.#release !== undefined) this.#release();
    else if (this.#fd !== undefined) close(this.#fd, () => undefined);
    callback(err);
  }
}
