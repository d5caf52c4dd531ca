/**
 * The fs store's open files: read handles on finished recordings and generations, the holder's writer,
 * slice handles, and the small file operations they share. `fs.ts` makes them; nothing else does.
 */
import { read as fsRead, readFileSync, writeSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { open, readFile, stat, unlink } from 'node:fs/promises';
import { tryLock as osTryLock, unlock as osUnlock } from 'fs-native-extensions';
import { storageError } from '../../errors.js';
import { metadataSync, surelyMissing } from '../../io/sync-guard.js';
import { fileInfo } from './final-files.js';
import { formatFrontier } from './fs-format.js';
import type {
  CommitOptions,
  FinalHandle,
  FinalInfo,
  PartialMeta,
  PartialWriter,
  ReadHandle,
  SliceHandle,
} from './store.js';

const COPY_CHUNK = 1024 * 1024;

/** What a writer needs of the store that made it: the commit, and to be forgotten when closed. */
export interface WriterOwner {
  commit(writer: FsPartialWriter, handle: FileHandle, options: CommitOptions): Promise<FinalInfo>;
  forget(writer: FsPartialWriter): void;
}

export class FsReadHandle implements ReadHandle {
  readonly fileId: string;
  protected readonly handle: FileHandle;
  #closed = false;
  /** Reads in progress on the descriptor; {@link close} waits for them, as a `FileHandle` waits for its own. */
  #reads = 0;
  #readsDone: (() => void) | undefined;

  constructor(handle: FileHandle, fileId: string) {
    this.handle = handle;
    this.fileId = fileId;
  }

  /**
   * One `pread` on the descriptor with a callback, instead of `FileHandle.read`: under a stampede every
   * reader of a download reads through here on every advance, and the promise API's per-call async frames
   * and result objects were a large share of what the process allocated (`npm run bench:memory`).
   */
  read(buffer: Buffer, offset: number, length: number, position: number): Promise<number> {
    return new Promise((resolve, reject) => {
      if (this.#closed) {
        reject(storageError(Object.assign(new Error('file closed'), { code: 'EBADF', syscall: 'read' })));
        return;
      }
      this.#reads++;
      try {
        fsRead(this.handle.fd, buffer, offset, length, position, (err, bytesRead) => {
          this.#readDone();
          if (err) reject(storageError(err));
          else resolve(bytesRead);
        });
      } catch (err) {
        // Arguments fs refuses at once (a descriptor closed under the handle, a bad range).
        this.#readDone();
        reject(storageError(err));
      }
    });
  }

  #readDone(): void {
    if (--this.#reads === 0) this.#readsDone?.();
  }

  async size(): Promise<number> {
    try {
      return (await this.handle.stat()).size;
    } catch (err) {
      throw storageError(err);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // The descriptor must outlive the reads on it: closed under a pending read, its number could be reused.
    if (this.#reads > 0) {
      await new Promise<void>((resolve) => {
        this.#readsDone = resolve;
      });
    }
    await this.handle.close().catch(() => undefined);
  }
}

export class FsFinalHandle extends FsReadHandle implements FinalHandle {
  readonly info: FinalInfo;

  constructor(handle: FileHandle, info: FinalInfo) {
    super(handle, info.fileId);
    this.info = info;
  }
}

export class FsPartialWriter extends FsReadHandle implements PartialWriter {
  readonly meta: PartialMeta;
  readonly id: string;
  readonly #store: WriterOwner;
  readonly #frontier: FileHandle;
  #length: number;

  constructor(
    store: WriterOwner,
    id: string,
    handle: FileHandle,
    frontier: FileHandle,
    meta: PartialMeta,
    length: number,
  ) {
    super(handle, meta.fileId);
    this.#store = store;
    this.id = id;
    this.#frontier = frontier;
    this.meta = meta;
    this.#length = length;
  }

  get length(): number {
    return this.#length;
  }

  /** Bytes still to be written, as far as the upstream said. */
  get remaining(): number {
    return this.meta.size === null ? 0 : Math.max(0, this.meta.size - this.#length);
  }

  /**
   * The generation's frontier file, open for writing: the store's commit writes the identity record over it
   * once every byte is in, and renames it (see `FsRecordingStore.commit`).
   */
  get frontierHandle(): FileHandle {
    return this.#frontier;
  }

  override async close(): Promise<void> {
    this.#store.forget(this);
    await this.#frontier.close().catch(() => undefined);
    await super.close();
  }

  async append(chunk: Uint8Array): Promise<void> {
    let written = 0;
    try {
      written = await writeAll(this.handle, chunk, this.#length);
      // Published only after the bytes are written, so a reader never trusts bytes not yet there.
      await writeFrontier(this.#frontier, this.fileId, this.#length + written);
    } catch (err) {
      throw storageError(err);
    } finally {
      this.#length += written;
    }
  }

  commit(options: CommitOptions): Promise<FinalInfo> {
    return this.#store.commit(this, this.handle, options);
  }
}

export class FsSliceHandle implements SliceHandle {
  readonly fileId: string;
  readonly #path: string;
  readonly #handle: FileHandle;
  /** The file's id on this host, to notice that the path no longer names it. */
  readonly #localId: string;
  #closed = false;

  constructor(path: string, handle: FileHandle, localId: string, fileId: string) {
    this.#path = path;
    this.#handle = handle;
    this.#localId = localId;
    this.fileId = fileId;
  }

  async claim(start: number, end: number): Promise<boolean> {
    try {
      if (!osTryLock(this.#handle.fd, start, end - start)) return false;
      const current = await statPath(this.#path);
      if (current?.fileId === this.#localId) return true;
      osUnlock(this.#handle.fd, start, end - start);
      return false;
    } catch (err) {
      throw storageError(err);
    }
  }

  async write(chunk: Uint8Array, position: number): Promise<void> {
    try {
      await writeAll(this.#handle, chunk, position);
    } catch (err) {
      throw storageError(err);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#handle.close().catch(() => undefined);
  }
}

/** Copies `length` bytes at `start` from one file to the same place in another; resolves to the count copied. */
export async function copyRange(
  from: FileHandle,
  to: FileHandle,
  start: number,
  length: number,
): Promise<number> {
  const buffer = Buffer.allocUnsafe(Math.min(COPY_CHUNK, Math.max(length, 1)));
  let copied = 0;
  while (copied < length) {
    const want = Math.min(buffer.length, length - copied);
    const { bytesRead } = await from.read(buffer, 0, want, start + copied);
    if (bytesRead === 0) break;
    await writeAll(to, buffer.subarray(0, bytesRead), start + copied);
    copied += bytesRead;
  }
  return copied;
}

/** Writes all of `chunk` at `position`; resolves to the count written (all of it). */
export async function writeAll(handle: FileHandle, chunk: Uint8Array, position: number): Promise<number> {
  let written = 0;
  while (written < chunk.byteLength) {
    const { bytesWritten } = await handle.write(
      chunk,
      written,
      chunk.byteLength - written,
      position + written,
    );
    written += bytesWritten;
  }
  return written;
}

/**
 * Rewrites the frontier line. The holder does so after every chunk it appends, and readers hear of the chunk
 * only then: a write of a few dozen bytes, made synchronously while {@link metadataSync} allows, rather than
 * a thread-pool round trip that a busy event loop gets back to late.
 */
export async function writeFrontier(handle: FileHandle, fileId: string, frontier: number): Promise<void> {
  const line = formatFrontier(fileId, frontier);
  if (
    metadataSync.on &&
    metadataSync.time(() => writeSync(handle.fd, line, 0, line.length, 0)) === line.length
  )
    return;
  // Synchronous calls are off, or a short write (a full volume answers with an error next time).
  await handle.write(line, 0, line.length, 0);
}

export function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

export async function unlinkIfPresent(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if (!isMissing(err)) throw storageError(err);
  }
}

/**
 * A small file's text, or `undefined` when it does not exist. One synchronous read while
 * {@link metadataSync} allows: a follower reads the frontier on every poll, and a reader of another process's
 * download hears of new bytes only as soon as its event loop takes the read back (open, stat, read and close
 * on the thread pool otherwise).
 */
export async function readTextIfPresent(path: string): Promise<string | undefined> {
  if (metadataSync.on) {
    try {
      return metadataSync.time(() => readFileSync(path, 'utf8'));
    } catch (err) {
      if (isMissing(err)) return undefined;
      // Any other failure is read again below, and reported as the thread pool's read reports it.
    }
  }
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if (isMissing(err)) return undefined;
    throw storageError(err);
  }
}

export async function statPath(
  path: string,
): Promise<{ fileId: string; size: number; mtime: Date } | undefined> {
  try {
    return fileInfo(await stat(path, { bigint: true }));
  } catch (err) {
    if (isMissing(err)) return undefined;
    throw storageError(err);
  }
}

export async function openFile(path: string, flags: 'r' | 'r+'): Promise<FileHandle | undefined> {
  if (surelyMissing(path)) return undefined;
  try {
    return await open(path, flags);
  } catch (err) {
    if (isMissing(err)) return undefined;
    throw storageError(err);
  }
}
