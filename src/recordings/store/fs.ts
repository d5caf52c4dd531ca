/**
 * {@link RecordingStore} on a directory:
 *
 * - `{dir}/{id}.mp3`: the finished recording, the only name a recording is ever served under;
 * - `{dir}/.{id}.mp3.part`: the download in progress, append-only, renamed to the final name when complete;
 * - `{dir}/.{id}.mp3.meta`: the partial's JSON sidecar ({@link PartialMeta}).
 *
 * Dot-prefixed temporary names keep partials out of casual listings and out of any glob for `*.mp3`.
 */
import { createReadStream, readFileSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { open, readdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { uptime } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { createError, storageError } from '../../errors.js';
import {
  type FileInfo,
  type Leftover,
  type PartialMeta,
  type PartialMetaInput,
  type PartialWriter,
  READ_CHUNK,
  type ReadHandle,
  type RecordingStore,
} from './store.js';

const ID = /^[A-Za-z0-9_-]{1,128}$/;
const LEFTOVER = /^\.([A-Za-z0-9_-]{1,128})\.mp3\.(?:part|meta)$/;

export interface FsRecordingStoreOptions {
  /** The recordings directory; it must exist. */
  dir: string;
}

export class FsRecordingStore implements RecordingStore {
  readonly dir: string;

  constructor(options: FsRecordingStoreOptions) {
    if (typeof options !== 'object' || options === null) throw new TypeError('options must be an object');
    if (typeof options.dir !== 'string' || options.dir === '') {
      throw new TypeError('options.dir must be a non-empty string');
    }
    this.dir = options.dir;
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

  async stat(id: string): Promise<FileInfo | undefined> {
    return statFile(this.finalPath(id));
  }

  createReadStream(id: string, start: number, end: number): Readable {
    return createReadStream(this.finalPath(id), { start, end, highWaterMark: READ_CHUNK });
  }

  async openFinal(id: string): Promise<ReadHandle | undefined> {
    return openReader(this.finalPath(id));
  }

  async statPartial(id: string): Promise<FileInfo | undefined> {
    return statFile(this.partPath(id));
  }

  async readMeta(id: string): Promise<PartialMeta | undefined> {
    let text: string;
    try {
      text = await readFile(this.metaPath(id), 'utf8');
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw storageError(err);
    }
    return parseMeta(text);
  }

  async openPartial(id: string): Promise<ReadHandle | undefined> {
    return openReader(this.partPath(id));
  }

  async beginPartial(id: string, input: PartialMetaInput): Promise<PartialWriter> {
    const part = this.partPath(id);
    let handle: FileHandle | undefined;
    try {
      // A fresh inode per generation keeps every generation append-only for readers holding the old one.
      await unlink(part).catch((err: unknown) => {
        if (!isMissing(err)) throw err;
      });
      handle = await open(part, 'wx+');
      const fileId = await handleId(handle);
      const meta: PartialMeta = { ...input, fileId, bootId: BOOT_ID };
      await writeFile(this.metaPath(id), JSON.stringify(meta));
      return new FsPartialWriter(this, id, handle, meta, 0);
    } catch (err) {
      await handle?.close().catch(() => undefined);
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
    try {
      const st = await handle.stat({ bigint: true });
      if (`${st.dev}:${st.ino}` !== meta.fileId) {
        await handle.close();
        return undefined;
      }
      return new FsPartialWriter(this, id, handle, meta, Number(st.size));
    } catch (err) {
      await handle.close().catch(() => undefined);
      throw storageError(err);
    }
  }

  async discardPartial(id: string): Promise<void> {
    for (const path of [this.partPath(id), this.metaPath(id)]) {
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
  #length: number;

  constructor(store: FsRecordingStore, id: string, handle: FileHandle, meta: PartialMeta, length: number) {
    super(handle, meta.fileId);
    this.#store = store;
    this.#id = id;
    this.meta = meta;
    this.#length = length;
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
    } catch (err) {
      throw storageError(err);
    } finally {
      this.#length += written;
    }
  }

  async commit(expectedSize: number, mtime: Date): Promise<FileInfo> {
    try {
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
      await unlink(this.#store.metaPath(this.#id)).catch(() => undefined);
      return { fileId: this.fileId, size, mtime };
    } catch (err) {
      throw storageError(err);
    }
  }
}

function checkId(id: string): string {
  if (!ID.test(id)) throw new TypeError('recording id must match ^[A-Za-z0-9_-]{1,128}$');
  return id;
}

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
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
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const m = value as Record<string, unknown>;
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
