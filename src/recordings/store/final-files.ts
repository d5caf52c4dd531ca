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
 * A file removed or replaced by another process (a purge, an eviction, a repair) must not go on being
 * served from a descriptor, nor keep its disk space allocated: a remembered file is looked at again (one
 * `stat` of its name) when it was last checked more than `revalidateMs` ago, and a timer drops descriptors
 * of files their name no longer names even when no request comes. So a file removed elsewhere is served
 * from here for at most `revalidateMs` more, and its space comes free within about twice that once the
 * streams reading it end.
 *
 * A file forgotten on purpose (a purge or a bounded-disk eviction in this process) is **retired**, not
 * closed at once: new requests look at the name again, but a request that found the file a moment before
 * (its `stat` done, its stream not yet made) still streams every byte of it by its `fileId` (POSIX keeps an
 * unlinked file's bytes while a descriptor is open). A retired descriptor closes at the first prune past
 * `revalidateMs` once no stream reads it.
 *
 * A small range (one read chunk at most) can also be read at once, by {@link FinalFiles.read}: one
 * synchronous `pread` from the remembered descriptor, no stream. For a file in the page cache that costs a few
 * microseconds of the event loop, less than handing the read to libuv's thread pool and streaming it back
 * (about 8 µs of the loop's time, measured on Node 20). A read from a cold or remote disk would block the
 * loop for as long as it takes, so a few slow reads close together turn these reads off for a while, and
 * streams (reads on the thread pool) serve meanwhile. One slow read alone turns nothing off: on a busy
 * machine the process may simply have been preempted in the middle of it. These reads have a
 * {@link SyncGuard} of their own, not the process's `metadataSync` (`io/sync-guard.ts`): a recording's bytes
 * may be read from the disk while its names and small sidecars are still cached, so slow reads of bytes
 * turn off only the reads of bytes.
 */
import type { BigIntStats } from 'node:fs';
import { close, fstat, open, read, readSync, stat } from 'node:fs';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { createError, storageError } from '../../errors.js';
import { takeChunk } from '../../io/chunks.js';
import { SyncGuard, surelyMissing } from '../../io/sync-guard.js';
import { type FinalIdentity, type FinalInfo, READ_CHUNK } from './store.js';

const openAsync = promisify(open);
const fstatAsync = promisify(fstat);
const statAsync = promisify(stat);

/** Reads what a finished file holds (its identity record), given the file's stats; `undefined` if unknown. */
export type DescribeFinal = (key: string, stats: BigIntStats) => Promise<FinalIdentity | undefined>;

interface Entry {
  fd: number;
  info: FinalInfo;
  path: string;
  /** When the name was last seen to name this file (the clock). */
  checkedAt: number;
  /** Streams reading from `fd` now. */
  readers: number;
  /** Out of the map; `fd` closes when the last reader ends. */
  evicted: boolean;
  /** When the entry was retired (the clock); `undefined` unless it waits in the retired map. */
  retiredAt: number | undefined;
}

export class FinalFiles {
  readonly #max: number;
  readonly #describe: DescribeFinal;
  readonly #revalidateMs: number;
  readonly #clock: () => number;
  readonly #entries = new Map<string, Entry>();
  readonly #opening = new Map<string, Promise<Entry | undefined>>();
  /** Retired entries by file id; see the file's comment. */
  readonly #retired = new Map<string, Entry>();
  #closed = false;
  /** Turns {@link read} off for a while after slow synchronous reads. */
  readonly #syncReads: SyncGuard;
  #pruner: NodeJS.Timeout | undefined;
  #pruning = false;

  /**
   * @param max descriptors kept open at most.
   * @param describe reads a file's identity when it is opened. @default none: every identity is unknown
   * @param revalidateMs how long a remembered file is trusted before its name is looked at again. @default 1000
   * @param clock milliseconds from a monotonic origin; tests pass a fake one. @default performance.now
   */
  constructor(
    max: number,
    describe: DescribeFinal = async () => undefined,
    revalidateMs = 1000,
    clock?: () => number,
  ) {
    if (!Number.isInteger(max) || max < 1)
      throw new TypeError('options.maxOpenFiles must be a positive integer');
    if (!Number.isInteger(revalidateMs) || revalidateMs < 1)
      throw new TypeError('options.revalidateMs must be a positive integer');
    this.#max = max;
    this.#describe = describe;
    this.#revalidateMs = revalidateMs;
    this.#clock = clock ?? (() => performance.now());
    // The guard's own default clock (a fake one here would need a fake CPU wait too: see SyncGuard).
    this.#syncReads = new SyncGuard(clock, 'reads');
  }

  /**
   * The finished file at `path` (opening and remembering it), or `undefined` if there is none. `fresh` drops
   * what is remembered first, so a file that replaced the remembered one is seen. `path` may be a function,
   * called only when the file must be opened: a remembered file needs no path built.
   */
  async stat(key: string, path: string | (() => string), fresh = false): Promise<FinalInfo | undefined> {
    if (fresh) {
      // A pending open started before the caller asked for a fresh look may have read the old file.
      await this.#opening.get(key)?.catch(() => undefined);
      this.#evict(key);
    } else {
      const now = this.statNow(key);
      if (now !== undefined) return now;
    }
    // Remembered but due a look: still the file its name names?
    const known = this.#touch(key);
    if (known !== undefined) {
      if (await this.#stillNamed(known)) return known.info;
      if (this.#entries.get(key) === known) this.#evict(key);
    }
    let pending = this.#opening.get(key);
    if (pending === undefined) {
      pending = this.#open(key, typeof path === 'string' ? path : path()).finally(() =>
        this.#opening.delete(key),
      );
      this.#opening.set(key, pending);
    }
    return (await pending)?.info;
  }

  /**
   * What {@link stat} answers without waiting: the remembered file for `key` while its name was last seen to
   * name it within `revalidateMs`; `undefined` when none is remembered or it is due a look (then `stat`).
   */
  statNow(key: string): FinalInfo | undefined {
    const known = this.#entries.get(key);
    if (known === undefined || this.#clock() - known.checkedAt > this.#revalidateMs) return undefined;
    return this.#touch(key)?.info;
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
      // A retired descriptor stays open for its grace period; a prune closes it then.
      if (entry.evicted && entry.readers === 0 && entry.retiredAt === undefined) {
        close(entry.fd, () => undefined);
      }
    });
  }

  /**
   * Bytes `start..end` (at most {@link READ_CHUNK} of them) of the remembered file, read at once into a
   * buffer of the chunk pool (`io/chunks.ts`; the caller gives it back once written), or `undefined` when no
   * descriptor is open for it (with `fileId`: for that file), the range is larger, or synchronous reads are
   * off after a slow one: the caller then streams. Throws RECGATE_STORAGE_ERROR when the read fails or the
   * file is shorter than the range.
   */
  read(key: string, start: number, end: number, fileId?: string): Buffer | undefined {
    const length = end - start + 1;
    if (!(length > 0 && length <= READ_CHUNK) || !this.#syncReads.on) return undefined;
    let entry = this.#touch(key);
    if (fileId !== undefined && entry?.info.fileId !== fileId) entry = this.#retired.get(fileId);
    if (entry === undefined) return undefined;
    const buffer = takeChunk(length);
    let bytesRead: number;
    try {
      bytesRead = this.#syncReads.time(() => readSync(entry.fd, buffer, 0, length, start));
    } catch (err) {
      throw storageError(err);
    }
    if (bytesRead < length) {
      throw createError('RECGATE_STORAGE_ERROR', {
        cause: new Error(`recording ended early at byte ${start + bytesRead}`),
      });
    }
    return buffer;
  }

  /**
   * Forgets the file remembered for `key` (it was removed): new requests look at the name again; requests
   * that found it keep reading it for a grace period, then its descriptor closes once no stream reads it.
   */
  forget(key: string): void {
    this.#retire(key);
  }

  /** Closes every descriptor no stream reads; the rest close as their streams end. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#pruner);
    for (const key of [...this.#entries.keys()]) this.#evict(key);
    this.#closeRetired(Number.POSITIVE_INFINITY);
  }

  /** Whether the entry's name still names its file; records when that was seen. */
  async #stillNamed(entry: Entry): Promise<boolean> {
    const now = this.#clock();
    const current = await statAsync(entry.path, { bigint: true }).catch(() => undefined);
    if (current === undefined || fileInfo(current).fileId !== entry.info.fileId) return false;
    entry.checkedAt = now;
    return true;
  }

  /** Drops remembered files removed or replaced meanwhile, so their space comes free without a request. */
  async #prune(): Promise<void> {
    if (this.#pruning) return;
    this.#pruning = true;
    try {
      for (const [key, entry] of [...this.#entries]) {
        if (this.#clock() - entry.checkedAt <= this.#revalidateMs) continue;
        if (!(await this.#stillNamed(entry)) && this.#entries.get(key) === entry) this.#evict(key);
      }
      this.#closeRetired(this.#clock());
    } finally {
      this.#pruning = false;
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
    // The cold path: usually there is no file, which one synchronous look says at once.
    if (surelyMissing(path)) return undefined;
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
        path,
        checkedAt: this.#clock(),
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
      this.#pruner ??= setInterval(() => void this.#prune(), this.#revalidateMs).unref();
      while (this.#entries.size > this.#max) this.#evict(this.#entries.keys().next().value as string);
      return entry;
    } catch (err) {
      close(fd, () => undefined);
      throw storageError(err);
    }
  }

  #retire(key: string): void {
    const entry = this.#entries.get(key);
    if (entry === undefined) return;
    this.#entries.delete(key);
    entry.evicted = true;
    entry.retiredAt = this.#clock();
    this.#retired.set(entry.info.fileId, entry);
    if (!this.#closed) this.#pruner ??= setInterval(() => void this.#prune(), this.#revalidateMs).unref();
  }

  /** Closes retired descriptors past their grace; those still read close as their last stream ends. */
  #closeRetired(now: number): void {
    for (const [fileId, entry] of this.#retired) {
      if (now - (entry.retiredAt ?? 0) < this.#revalidateMs) continue;
      this.#retired.delete(fileId);
      entry.retiredAt = undefined;
      if (entry.readers === 0) close(entry.fd, () => undefined);
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
