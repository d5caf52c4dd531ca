/**
 * {@link RecordingStore} on a directory:
 *
 * - `{dir}/{id}.mp3`: the finished recording, the only name a recording is ever served under;
 * - `{dir}/.{id}.mp3.part`: the download in progress, renamed to the final name when complete; the holder
 *   writes it sequentially, seek-ahead slices at their offsets beyond the frontier (a sparse file meanwhile);
 * - `{dir}/.{id}.mp3.meta`: the partial's JSON sidecar ({@link PartialMeta});
 * - `{dir}/.{id}.mp3.frontier`: the holder's frontier, one line `{fileId} {n} {n}\n` with `n` as 16 decimal
 *   digits, rewritten in place after every append. The number is written twice because a read racing the
 *   rewrite may see a mix of old and new bytes; a reader trusts the line only when both copies agree;
 * - `{dir}/.{id}.mp3.blocks`: the block map, JSON lines: a header ({@link BlockMapHeader}) and then
 *   {@link BlockRecord}s, appended with `O_APPEND` in one write each, so appends from several processes never
 *   interleave and need no lock. It is created with its header in one step (written aside, then `link`ed),
 *   so nobody ever sees a map without its header.
 *
 * Dot-prefixed temporary names keep partials out of casual listings and out of any glob for `*.mp3`.
 */
import { randomBytes } from 'node:crypto';
import { constants, createReadStream, readFileSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { link, open, readdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { uptime } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { tryLock as osTryLock, unlock as osUnlock } from 'fs-native-extensions';
import { createError, storageError } from '../../errors.js';
import { FinalFiles } from './final-files.js';
import {
  type BlockMap,
  type BlockMapHeader,
  type BlockRecord,
  type FileInfo,
  type Leftover,
  type PartialMeta,
  type PartialMetaInput,
  type PartialWriter,
  READ_CHUNK,
  type ReadHandle,
  type RecordingStore,
  type SliceHandle,
} from './store.js';

const ID = /^[A-Za-z0-9_-]{1,128}$/;
const LEFTOVER = /^\.([A-Za-z0-9_-]{1,128})\.mp3\.(?:part|meta|frontier|blocks)$/;
const FRONTIER_LINE = /^(\S+) (\d{16}) (\d{16})\n$/;

export interface FsRecordingStoreOptions {
  /** The recordings directory; it must exist. */
  dir: string;
  /** Finished recordings whose descriptors stay open for warm requests. @default 256 */
  maxOpenFiles?: number;
  /**
   * How long `commit` waits for slice writers of other processes to release the partial before renaming it
   * anyway (their bytes are identical; only the mtime could move). @default 2000
   */
  commitWaitMs?: number;
}

export class FsRecordingStore implements RecordingStore {
  readonly dir: string;
  readonly commitWaitMs: number;
  readonly #finals: FinalFiles;

  constructor(options: FsRecordingStoreOptions) {
    if (typeof options !== 'object' || options === null) throw new TypeError('options must be an object');
    if (typeof options.dir !== 'string' || options.dir === '') {
      throw new TypeError('options.dir must be a non-empty string');
    }
    const wait = options.commitWaitMs ?? 2000;
    if (!Number.isInteger(wait) || wait < 0) {
      throw new TypeError('options.commitWaitMs must be a non-negative integer');
    }
    this.dir = options.dir;
    this.commitWaitMs = wait;
    this.#finals = new FinalFiles(options.maxOpenFiles ?? 256);
  }

  finalPath(id: string): string {
    return join(this.dir, `${checkId(id)}.mp3`);
  }

  partPath(id: string): string {
    return join(this.dir, `.${checkId(id)}.mp3.part`);
  }

  metaPath(id: string): string {
    return join(this.dir, `.${checkId(id)}.mp3.meta`);
  }

  frontierPath(id: string): string {
    return join(this.dir, `.${checkId(id)}.mp3.frontier`);
  }

  blocksPath(id: string): string {
    return join(this.dir, `.${checkId(id)}.mp3.blocks`);
  }

  async stat(id: string): Promise<FileInfo | undefined> {
    return this.#finals.stat(id, this.finalPath(id));
  }

  createReadStream(id: string, start: number, end: number): Readable {
    return (
      this.#finals.createReadStream(id, start, end) ??
      createReadStream(this.finalPath(id), { start, end, highWaterMark: READ_CHUNK })
    );
  }

  async close(): Promise<void> {
    this.#finals.close();
  }

  async openFinal(id: string): Promise<ReadHandle | undefined> {
    return openReader(this.finalPath(id));
  }

  async statPartial(id: string): Promise<FileInfo | undefined> {
    return statFile(this.partPath(id));
  }

  async readMeta(id: string): Promise<PartialMeta | undefined> {
    const text = await readTextIfPresent(this.metaPath(id));
    return text === undefined ? undefined : parseMeta(text);
  }

  async openPartial(id: string): Promise<ReadHandle | undefined> {
    return openReader(this.partPath(id));
  }

  async beginPartial(id: string, input: PartialMetaInput): Promise<PartialWriter> {
    const part = this.partPath(id);
    let handle: FileHandle | undefined;
    let frontier: FileHandle | undefined;
    try {
      // A fresh inode per generation keeps the bytes below every generation's frontier unchanged for readers
      // holding the old one; the old generation's frontier and block map go with it.
      for (const path of [part, this.frontierPath(id), this.blocksPath(id)]) {
        await unlink(path).catch((err: unknown) => {
          if (!isMissing(err)) throw err;
        });
      }
      handle = await open(part, 'wx+');
      const fileId = await handleId(handle);
      frontier = await open(this.frontierPath(id), 'w');
      await writeFrontier(frontier, fileId, 0);
      const meta: PartialMeta = { ...input, fileId, bootId: BOOT_ID };
      await writeFile(this.metaPath(id), JSON.stringify(meta));
      return new FsPartialWriter(this, id, handle, frontier, meta, 0);
    } catch (err) {
      await handle?.close().catch(() => undefined);
      await frontier?.close().catch(() => undefined);
      throw storageError(err);
    }
  }

  async resumePartial(id: string): Promise<PartialWriter | undefined> {
    const meta = await this.readMeta(id);
    if (meta === undefined || meta.bootId !== BOOT_ID) return undefined;
    let handle: FileHandle;
    try {
      handle = await open(this.partPath(id), 'r+');
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw storageError(err);
    }
    let frontier: FileHandle | undefined;
    try {
      const st = await handle.stat({ bigint: true });
      if (`${st.dev}:${st.ino}` !== meta.fileId) {
        await handle.close();
        return undefined;
      }
      // Only the published frontier is trusted: beyond it the file may hold slices, or holes.
      const length = Math.min((await this.readFrontier(id, meta.fileId)) ?? 0, Number(st.size));
      frontier = await open(this.frontierPath(id), 'w');
      await writeFrontier(frontier, meta.fileId, length);
      return new FsPartialWriter(this, id, handle, frontier, meta, length);
    } catch (err) {
      await handle.close().catch(() => undefined);
      await frontier?.close().catch(() => undefined);
      throw storageError(err);
    }
  }

  async readFrontier(id: string, fileId: string): Promise<number | undefined> {
    let text: string;
    try {
      text = await readFile(this.frontierPath(id), 'utf8');
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw storageError(err);
    }
    const match = FRONTIER_LINE.exec(text);
    if (match === null || match[1] !== fileId || match[2] !== match[3]) return undefined;
    return Number(match[2]);
  }

  async openSlice(id: string, fileId: string): Promise<SliceHandle | undefined> {
    let handle: FileHandle;
    try {
      handle = await open(this.partPath(id), 'r+');
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw storageError(err);
    }
    try {
      if ((await handleId(handle)) !== fileId) {
        await handle.close();
        return undefined;
      }
      return new FsSliceHandle(this.partPath(id), handle, fileId);
    } catch (err) {
      await handle.close().catch(() => undefined);
      throw storageError(err);
    }
  }

  async readBlockMap(id: string): Promise<BlockMap | undefined> {
    const text = await readTextIfPresent(this.blocksPath(id));
    if (text === undefined) return undefined;
    const lines = text.split('\n');
    const header = parseBlockHeader(lines[0] ?? '');
    if (header === undefined) return undefined;
    const records: BlockRecord[] = [];
    // The last line may be an append still under way; it has no newline yet and is left for the next read.
    for (const line of lines.slice(1, -1)) {
      const record = parseBlockRecord(line);
      if (record !== undefined) records.push(record);
    }
    return { header, records };
  }

  async appendBlockMap(id: string, header: BlockMapHeader, records: BlockRecord[]): Promise<boolean> {
    const path = this.blocksPath(id);
    const text = Buffer.from(records.map((r) => `${JSON.stringify(r)}\n`).join(''));
    try {
      for (let attempt = 0; ; attempt++) {
        let handle: FileHandle;
        try {
          handle = await open(path, constants.O_RDWR | constants.O_APPEND);
        } catch (err) {
          if (!isMissing(err) || attempt > 2) throw err;
          await this.#createBlockMap(path, header);
          continue;
        }
        try {
          const head = Buffer.alloc(4096);
          const { bytesRead } = await handle.read(head, 0, head.length, 0);
          const firstLine = head.subarray(0, bytesRead).toString('utf8').split('\n')[0] ?? '';
          const existing = parseBlockHeader(firstLine)?.fileId;
          if (existing !== header.fileId) {
            // A map left by a slice writer of an older generation must not block this one's.
            const current = await statFile(this.partPath(id));
            if (current?.fileId !== header.fileId || attempt > 2) return false;
            await unlink(path).catch(() => undefined);
            continue;
          }
          if (text.length > 0) await handle.write(text, 0, text.length, null);
          return true;
        } finally {
          await handle.close();
        }
      }
    } catch (err) {
      throw storageError(err);
    }
  }

  /** Creates the block map with its header in one step; a map another process created first wins. */
  async #createBlockMap(path: string, header: BlockMapHeader): Promise<void> {
    const aside = `${path}.${randomBytes(6).toString('hex')}`;
    await writeFile(aside, `${JSON.stringify({ v: 1, ...header })}\n`);
    try {
      await link(aside, path).catch((err: unknown) => {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      });
    } finally {
      await unlink(aside).catch(() => undefined);
    }
  }

  async discardPartial(id: string): Promise<void> {
    for (const path of [this.partPath(id), this.metaPath(id), this.frontierPath(id), this.blocksPath(id)]) {
      try {
        await unlink(path);
      } catch (err) {
        if (!isMissing(err)) throw storageError(err);
      }
    }
  }

  async leftovers(): Promise<Leftover[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      throw storageError(err);
    }
    const found = new Map<string, Date>();
    for (const name of names) {
      const id = LEFTOVER.exec(name)?.[1];
      if (id === undefined) continue;
      const info = await statFile(join(this.dir, name));
      if (info === undefined) continue;
      const seen = found.get(id);
      if (seen === undefined || seen < info.mtime) found.set(id, info.mtime);
    }
    return [...found].map(([id, mtime]) => ({ id, mtime }));
  }

  /** Flushes the directory entry of a rename; platforms that cannot open directories skip it. */
  async syncDir(): Promise<void> {
    let dir: FileHandle | undefined;
    try {
      dir = await open(this.dir, 'r');
      await dir.sync();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EISDIR' && code !== 'EPERM' && code !== 'EINVAL' && code !== 'EACCES') {
        throw storageError(err);
      }
    } finally {
      await dir?.close().catch(() => undefined);
    }
  }
}

class FsReadHandle implements ReadHandle {
  readonly fileId: string;
  protected readonly handle: FileHandle;
  #closed = false;

  constructor(handle: FileHandle, fileId: string) {
    this.handle = handle;
    this.fileId = fileId;
  }

  async read(buffer: Buffer, offset: number, length: number, position: number): Promise<number> {
    try {
      const { bytesRead } = await this.handle.read(buffer, offset, length, position);
      return bytesRead;
    } catch (err) {
      throw storageError(err);
    }
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
    await this.handle.close().catch(() => undefined);
  }
}

class FsPartialWriter extends FsReadHandle implements PartialWriter {
  readonly meta: PartialMeta;
  readonly #store: FsRecordingStore;
  readonly #id: string;
  readonly #frontier: FileHandle;
  #length: number;

  constructor(
    store: FsRecordingStore,
    id: string,
    handle: FileHandle,
    frontier: FileHandle,
    meta: PartialMeta,
    length: number,
  ) {
    super(handle, meta.fileId);
    this.#store = store;
    this.#id = id;
    this.#frontier = frontier;
    this.meta = meta;
    this.#length = length;
  }

  override async close(): Promise<void> {
    await this.#frontier.close().catch(() => undefined);
    await super.close();
  }

  get length(): number {
    return this.#length;
  }

  async append(chunk: Uint8Array): Promise<void> {
    let written = 0;
    try {
      while (written < chunk.byteLength) {
        const { bytesWritten } = await this.handle.write(
          chunk,
          written,
          chunk.byteLength - written,
          this.#length + written,
        );
        written += bytesWritten;
      }
      // Published only after the bytes are written, so a reader never trusts bytes not yet there.
      await writeFrontier(this.#frontier, this.fileId, this.#length + written);
    } catch (err) {
      throw storageError(err);
    } finally {
      this.#length += written;
    }
  }

  async commit(expectedSize: number, mtime: Date): Promise<FileInfo> {
    let locked = false;
    try {
      // Slice writers hold byte-range locks on their ranges; the whole-file lock waits for them to let go,
      // and a slice writer that locks after the rename sees the path moved and stops (FsSliceHandle.claim).
      const deadline = Date.now() + this.#store.commitWaitMs;
      for (;;) {
        locked = osTryLock(this.handle.fd, 0, 0);
        if (locked || Date.now() >= deadline) break;
        await sleep(5);
      }
      const size = (await this.handle.stat()).size;
      if (size !== expectedSize || this.#length !== expectedSize) {
        throw createError('RECGATE_STORAGE_ERROR', {
          message: 'The downloaded recording does not have the expected size',
        });
      }
      await this.handle.utimes(mtime, mtime);
      await this.handle.sync();
      await rename(this.#store.partPath(this.#id), this.#store.finalPath(this.#id));
      await this.#store.syncDir();
      for (const path of [
        this.#store.metaPath(this.#id),
        this.#store.frontierPath(this.#id),
        this.#store.blocksPath(this.#id),
      ]) {
        await unlink(path).catch(() => undefined);
      }
      return { fileId: this.fileId, size, mtime };
    } catch (err) {
      throw storageError(err);
    } finally {
      if (locked) {
        try {
          osUnlock(this.handle.fd, 0, 0);
        } catch {
          // Closing the handle releases it anyway.
        }
      }
    }
  }
}

class FsSliceHandle implements SliceHandle {
  readonly fileId: string;
  readonly #path: string;
  readonly #handle: FileHandle;
  #closed = false;

  constructor(path: string, handle: FileHandle, fileId: string) {
    this.#path = path;
    this.#handle = handle;
    this.fileId = fileId;
  }

  async claim(start: number, end: number): Promise<boolean> {
    try {
      if (!osTryLock(this.#handle.fd, start, end - start)) return false;
      const current = await statFile(this.#path);
      if (current?.fileId === this.fileId) return true;
      osUnlock(this.#handle.fd, start, end - start);
      return false;
    } catch (err) {
      throw storageError(err);
    }
  }

  async write(chunk: Uint8Array, position: number): Promise<void> {
    let written = 0;
    try {
      while (written < chunk.byteLength) {
        const { bytesWritten } = await this.#handle.write(
          chunk,
          written,
          chunk.byteLength - written,
          position + written,
        );
        written += bytesWritten;
      }
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

async function writeFrontier(handle: FileHandle, fileId: string, frontier: number): Promise<void> {
  const n = String(frontier).padStart(16, '0');
  const line = Buffer.from(`${fileId} ${n} ${n}\n`);
  await handle.write(line, 0, line.length, 0);
}

function parseBlockHeader(line: string): BlockMapHeader | undefined {
  const h = parseJsonObject(line);
  if (h === undefined) return undefined;
  if (
    h.v !== 1 ||
    typeof h.fileId !== 'string' ||
    !Number.isSafeInteger(h.size) ||
    typeof h.etag !== 'string' ||
    !(h.lastModified === null || typeof h.lastModified === 'string')
  ) {
    return undefined;
  }
  return { fileId: h.fileId, size: h.size as number, etag: h.etag, lastModified: h.lastModified };
}

function parseBlockRecord(line: string): BlockRecord | undefined {
  const r = parseJsonObject(line);
  if (r === undefined) return undefined;
  const range =
    Number.isSafeInteger(r.start) && Number.isSafeInteger(r.end) && (r.start as number) < (r.end as number);
  if (r.t === 'claim' && range && typeof r.token === 'string') {
    return { t: 'claim', token: r.token, start: r.start as number, end: r.end as number };
  }
  if (r.t === 'have' && range) return { t: 'have', start: r.start as number, end: r.end as number };
  if (r.t === 'off' && typeof r.reason === 'string') return { t: 'off', reason: r.reason };
  return undefined;
}

function checkId(id: string): string {
  if (!ID.test(id)) throw new TypeError('recording id must match ^[A-Za-z0-9_-]{1,128}$');
  return id;
}

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/** A small file's text, or `undefined` when it does not exist. */
async function readTextIfPresent(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if (isMissing(err)) return undefined;
    throw storageError(err);
  }
}

async function statFile(path: string): Promise<FileInfo | undefined> {
  try {
    const st = await stat(path, { bigint: true });
    return { fileId: `${st.dev}:${st.ino}`, size: Number(st.size), mtime: new Date(Number(st.mtimeMs)) };
  } catch (err) {
    if (isMissing(err)) return undefined;
    throw storageError(err);
  }
}

async function openReader(path: string): Promise<ReadHandle | undefined> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    if (isMissing(err)) return undefined;
    throw storageError(err);
  }
  try {
    return new FsReadHandle(handle, await handleId(handle));
  } catch (err) {
    await handle.close().catch(() => undefined);
    throw storageError(err);
  }
}

async function handleId(handle: FileHandle): Promise<string> {
  const st = await handle.stat({ bigint: true });
  return `${st.dev}:${st.ino}`;
}

function parseMeta(text: string): PartialMeta | undefined {
  const m = parseJsonObject(text);
  if (m === undefined) return undefined;
  const nullableString = (v: unknown) => v === null || typeof v === 'string';
  if (
    typeof m.recordingSid !== 'string' ||
    !(m.size === null || (Number.isSafeInteger(m.size) && (m.size as number) >= 0)) ||
    !nullableString(m.etag) ||
    !nullableString(m.lastModified) ||
    typeof m.acceptsRanges !== 'boolean' ||
    typeof m.startedAt !== 'string' ||
    typeof m.fileId !== 'string' ||
    typeof m.bootId !== 'string'
  ) {
    return undefined;
  }
  return m as unknown as PartialMeta;
}

function readBootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    // Without a kernel boot id, the boot time to the minute tells boots apart.
    return `boot-${Math.round((Date.now() / 1000 - uptime()) / 60)}`;
  }
}

const BOOT_ID = readBootId();

/** A JSON object, or `undefined` for anything else (torn writes and foreign files included). */
function parseJsonObject(text: string): Record<string, unknown> | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  return typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : undefined;
}
