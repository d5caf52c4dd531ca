/**
 * {@link RecordingStore} on a directory (local, or shared by several hosts):
 *
 * - `{id}.mp3`: the finished recording, the only name a recording is ever served under. An id is a cache key
 *   (`../variant.ts`): a variant's id carries its suffix, and its file is `{id}.mp3` (`CA….dual.mp3`), or
 *   `{id}` itself for WAV (`CA….wav`, `CA….dual.wav`); every name below uses that file name where this
 *   comment writes `{id}.mp3`;
 * - `{id}.peaks.json`: the waveform computed from the finished recording (`../../waveform/`), written
 *   aside and renamed into place, removed with the recording;
 * - `.{id}.mp3.id`: its identity record, JSON ({@link FinalIdentity} plus the file's size and inode number),
 *   written over the generation's frontier file once every byte is in, flushed, and renamed into place just
 *   before the recording is (so a commit makes no new file). The inode
 *   number binds the record to the file: a record that names another inode describes a file that is not
 *   there, and the file's identity is unknown. Inode numbers are the server's on NFS, the same on every host;
 * - `.{id}.mp3.meta`: the pointer, the current generation's JSON sidecar ({@link PartialMeta}), replaced
 *   atomically (written aside, then renamed) so a reader never sees half of it;
 * - `.{id}.mp3.{gen}.part`: generation `gen`'s file (16 hex digits, random): written sequentially by its
 *   holder, seek-ahead slices at their offsets beyond the frontier (a sparse file meanwhile), and renamed to
 *   `{id}.mp3` when complete;
 * - `.{id}.mp3.{gen}.frontier`: how far the holder got, one line `{gen} {n} {n}\n` with `n` as 16 decimal
 *   digits, rewritten in place after every append. The number is written twice because a read racing the
 *   rewrite may see a mix of old and new bytes; a reader trusts the line only when both copies agree. At the
 *   commit the identity record is written over it (it then states the whole size) and it is renamed to be
 *   the record;
 * - `.{id}.mp3.{gen}.blocks`: the generation's block map, JSON lines: a header ({@link BlockMapHeader}) and
 *   then {@link BlockRecord}s, appended with `O_APPEND` in one write each, so appends from several processes
 *   never interleave and need no lock. It is created with its header in one step (written aside, then
 *   `link`ed), so nobody ever sees a map without its header;
 * - `….tmp-{hex}`: sidecars being written aside, and `.recgate-write-check-…`: write probes; both swept
 *   once a minute old, and the pointer's and identity record's (which only the lock holder writes) at once
 *   with the recording's other leftovers.
 *
 * Every generation having files of its own is what keeps a writer that lost its lock (and does not know it
 * yet) from touching another writer's bytes or publishing them. Dot-prefixed names keep all of this out of
 * casual listings and out of any glob for `*.mp3`.
 */
import { randomBytes } from 'node:crypto';
import type { Dir } from 'node:fs';
import {
  closeSync,
  constants,
  linkSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  statfsSync,
  statSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { link, mkdir, open, opendir, rename, stat, statfs, unlink, writeFile } from 'node:fs/promises';
import { uptime } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { tryLock as osTryLock, unlock as osUnlock } from 'fs-native-extensions';
import { createError, storageError } from '../../errors.js';
import { metadataSync } from '../../io/sync-guard.js';
import { fileNameOf, KEY_PATTERN, keyOfFileName } from '../variant.js';
import { FdRange, FinalFiles, fileInfo } from './final-files.js';
import {
  copyRange,
  FsFinalHandle,
  FsPartialWriter,
  FsReadHandle,
  FsSliceHandle,
  isMissing,
  openFile,
  readTextIfPresent,
  statPath,
  unlinkIfPresent,
  type WriterOwner,
  writeAll,
  writeFrontier,
} from './fs-files.js';
import {
  GENERATION,
  nullableString,
  parseBlockHeader,
  parseBlockRecord,
  parseFrontier,
  parseJsonObject,
  parseMeta,
  sameHeader,
} from './fs-format.js';
import {
  type BlockMap,
  type BlockMapHeader,
  type BlockRecord,
  type CommitOptions,
  type FinalHandle,
  type FinalIdentity,
  type FinalInfo,
  type FinishedFile,
  type Leftover,
  type PartialMeta,
  type PartialMetaInput,
  type PartialWriter,
  parseStoredEncryption,
  type ReadHandle,
  type RecordingStore,
  type ResumeFrom,
  type SliceHandle,
  type VolumeSpace,
} from './store.js';

const ID = new RegExp(`^${KEY_PATTERN}$`);
/** A finished recording's file name (see `../variant.ts`), as a regular expression source. */
const FILE = '[A-Za-z0-9_-]{1,128}(?:\\.dual)?\\.(?:mp3|wav)';
/** A finished recording's name. */
const FINAL = new RegExp(`^(${FILE})$`);
/**
 * Files of a recording that only a download needs (and the pre-generation layout's names), and the pointer
 * and identity record being written aside: only the lock holder writes those, so whoever holds the lock
 * next knows them abandoned, whatever their age.
 */
const LEFTOVER = new RegExp(
  `^\\.(${FILE})\\.(?:[0-9a-f]{16}\\.(?:part|frontier|blocks)|part|meta|frontier|blocks|id|(?:meta|id)\\.tmp-[0-9a-f]+)$`,
);
/** Files written aside and renamed (or linked) into place, and write probes: never needed once old. */
const TEMPORARY = new RegExp(
  `^(?:\\.${FILE}\\.(?:[0-9a-f]{16}\\.)?(?:meta|id|blocks)\\.(?:tmp-)?[0-9a-f]{8,}|${KEY_PATTERN}\\.peaks\\.json\\.tmp-[0-9a-f]{8,}|\\.recgate-write-check-.+)$`,
);
/** Room kept free beyond a recording's own bytes, for sidecars and block maps. */
const HEADROOM_BYTES = 64 * 1024;

export interface FsRecordingStoreOptions {
  /** The recordings directory; created if missing. */
  dir: string;
  /** Finished recordings whose descriptors stay open for warm requests. @default 256 */
  maxOpenFiles?: number;
  /**
   * How long a remembered finished file is served before its name is looked at again, in ms: a file another
   * process removed (purged, evicted) or replaced is served from here for at most this long. @default 1000
   */
  finalRevalidateMs?: number;
  /**
   * How long `commit` waits for slice writers of other processes to release the partial before renaming it
   * anyway (their bytes are identical; only the mtime could move). @default 2000
   */
  commitWaitMs?: number;
}

type GenerationFile = 'part' | 'frontier' | 'blocks';

export class FsRecordingStore implements RecordingStore, WriterOwner {
  readonly bootId: string = BOOT_ID;
  readonly dir: string;
  readonly commitWaitMs: number;
  readonly #finals: FinalFiles;
  /** Writers of this process not yet committed or closed: what they still have to write is spoken for. */
  readonly #writers = new Set<FsPartialWriter>();

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
    this.#finals = new FinalFiles(
      options.maxOpenFiles ?? 256,
      (id, st) => this.#describe(id, st.ino, st.size),
      options.finalRevalidateMs ?? 1000,
    );
  }

  finalPath(id: string): string {
    return join(this.dir, fileNameOf(checkId(id)));
  }

  /** The waveform's peaks computed from `id`'s finished recording. */
  peaksPath(id: string): string {
    return join(this.dir, `${checkId(id)}.peaks.json`);
  }

  identityPath(id: string): string {
    return join(this.dir, `.${fileNameOf(checkId(id))}.id`);
  }

  metaPath(id: string): string {
    return join(this.dir, `.${fileNameOf(checkId(id))}.meta`);
  }

  /** A file of generation `fileId`: its bytes, its frontier or its block map. */
  generationPath(id: string, fileId: string, file: GenerationFile): string {
    if (!GENERATION.test(fileId)) throw new TypeError('generation must be 16 hexadecimal digits');
    return join(this.dir, `.${fileNameOf(checkId(id))}.${fileId}.${file}`);
  }

  async stat(id: string, options: { fresh?: boolean } = {}): Promise<FinalInfo | undefined> {
    return this.#finals.stat(id, () => this.finalPath(id), options.fresh === true);
  }

  statNow(id: string): FinalInfo | undefined {
    return this.#finals.statNow(id);
  }

  createReadStream(id: string, start: number, end: number, fileId?: string): Readable {
    return (
      this.#finals.createReadStream(id, start, end, fileId) ??
      new FdRange(this.finalPath(id), start, end, undefined, fileId)
    );
  }

  read(id: string, start: number, end: number, fileId?: string): Buffer | undefined {
    return this.#finals.read(id, start, end, fileId);
  }

  async close(): Promise<void> {
    this.#finals.close();
  }

  async openFinal(id: string): Promise<FinalHandle | undefined> {
    const handle = await openFile(this.finalPath(id), 'r');
    if (handle === undefined) return undefined;
    try {
      const st = await handle.stat({ bigint: true });
      const info: FinalInfo = { ...fileInfo(st), identity: await this.#describe(id, st.ino, st.size) };
      return new FsFinalHandle(handle, info);
    } catch (err) {
      await handle.close().catch(() => undefined);
      throw storageError(err);
    }
  }

  async readMeta(id: string): Promise<PartialMeta | undefined> {
    const text = await readTextIfPresent(this.metaPath(id));
    return text === undefined ? undefined : parseMeta(text);
  }

  async openPartial(id: string, fileId: string): Promise<ReadHandle | undefined> {
    const handle = await openFile(this.generationPath(id, fileId, 'part'), 'r');
    return handle === undefined ? undefined : new FsReadHandle(handle, fileId);
  }

  async readFrontier(id: string, fileId: string): Promise<number | undefined> {
    const text = await readTextIfPresent(this.generationPath(id, fileId, 'frontier'));
    if (text === undefined) return undefined;
    return parseFrontier(text, fileId);
  }

  async beginPartial(id: string, input: PartialMetaInput, from?: ResumeFrom): Promise<PartialWriter> {
    checkId(id);
    const fileId = randomBytes(8).toString('hex');
    const created: string[] = [];
    let handle: FileHandle | undefined;
    let frontier: FileHandle | undefined;
    try {
      await this.#ensureRoom(input.size === null ? 0 : input.size - (from?.length ?? 0));
      const previous = await this.readMeta(id);
      const part = this.generationPath(id, fileId, 'part');
      const frontierPath = this.generationPath(id, fileId, 'frontier');
      // Both at once: the upstream's first bytes wait for this generation.
      const [opened, openedFrontier] = await Promise.allSettled([
        this.#create(part),
        this.#create(frontierPath),
      ]);
      if (opened.status === 'fulfilled') {
        handle = opened.value;
        created.push(part);
      }
      if (openedFrontier.status === 'fulfilled') {
        frontier = openedFrontier.value;
        created.push(frontierPath);
      }
      if (opened.status === 'rejected') throw opened.reason;
      if (openedFrontier.status === 'rejected') throw openedFrontier.reason;
      const length = from === undefined ? 0 : await this.#copyFrom(id, fileId, from, input, handle!, created);
      await writeFrontier(frontier!, fileId, length);
      const meta: PartialMeta = { ...input, fileId, bootId: BOOT_ID };
      // The pointer moves last: readers in other processes find the file and its frontier already there.
      await this.#replace(this.metaPath(id), JSON.stringify(meta));
      for (const old of new Set([previous?.fileId, from?.fileId])) {
        if (old !== undefined && old !== fileId && GENERATION.test(old))
          await this.#removeGeneration(id, old);
      }
      const writer = new FsPartialWriter(this, id, handle!, frontier!, meta, length);
      this.#writers.add(writer);
      return writer;
    } catch (err) {
      await handle?.close().catch(() => undefined);
      await frontier?.close().catch(() => undefined);
      for (const path of created) await unlink(path).catch(() => undefined);
      throw storageError(err);
    }
  }

  async discardPartial(id: string): Promise<void> {
    const meta = await this.readMeta(id);
    if (meta !== undefined && GENERATION.test(meta.fileId)) await this.#removeGeneration(id, meta.fileId);
    await unlinkIfPresent(this.metaPath(id));
  }

  async openSlice(id: string, fileId: string): Promise<SliceHandle | undefined> {
    const path = this.generationPath(id, fileId, 'part');
    const handle = await openFile(path, 'r+');
    if (handle === undefined) return undefined;
    try {
      return new FsSliceHandle(path, handle, fileInfo(await handle.stat({ bigint: true })).fileId, fileId);
    } catch (err) {
      await handle.close().catch(() => undefined);
      throw storageError(err);
    }
  }

  async readBlockMap(id: string, fileId: string): Promise<BlockMap | undefined> {
    const text = await readTextIfPresent(this.generationPath(id, fileId, 'blocks'));
    if (text === undefined) return undefined;
    const lines = text.split('\n');
    const header = parseBlockHeader(lines[0] ?? '');
    if (header === undefined || header.fileId !== fileId) return undefined;
    const records: BlockRecord[] = [];
    // The last line may be an append still under way; it has no newline yet and is left for the next read.
    for (const line of lines.slice(1, -1)) {
      const record = parseBlockRecord(line);
      if (record !== undefined) records.push(record);
    }
    return { header, records };
  }

  async appendBlockMap(id: string, header: BlockMapHeader, records: BlockRecord[]): Promise<boolean> {
    const path = this.generationPath(id, header.fileId, 'blocks');
    const text = Buffer.from(records.map((r) => `${JSON.stringify(r)}\n`).join(''));
    try {
      // The holder records here, before readers hear of a new generation, whether an early slice is coming:
      // a dozen calls between the upstream's headers and the first bytes reaching anyone, each a thread-pool
      // round trip a busy event loop gets back to late. Synchronously while the guard allows.
      if (metadataSync.on) return metadataSync.time(() => this.#appendBlockMapSync(id, header, path, text));
      for (let attempt = 0; ; attempt++) {
        let handle: FileHandle;
        try {
          handle = await open(path, constants.O_RDWR | constants.O_APPEND);
        } catch (err) {
          if (!isMissing(err) || attempt > 1) throw err;
          // A map for a generation that is gone would only be litter.
          if ((await statPath(this.generationPath(id, header.fileId, 'part'))) === undefined) return false;
          await this.#createBlockMap(path, header);
          continue;
        }
        try {
          const head = Buffer.alloc(4096);
          const { bytesRead } = await handle.read(head, 0, head.length, 0);
          const existing = parseBlockHeader(
            head.subarray(0, bytesRead).toString('utf8').split('\n')[0] ?? '',
          );
          if (existing === undefined || !sameHeader(existing, header)) return false;
          if (text.length > 0) await handle.write(text, 0, text.length, null);
          return true;
        } finally {
          await handle.close();
        }
      }
    } catch (err) {
      if (isMissing(err)) return false;
      throw storageError(err);
    }
  }

  /** {@link appendBlockMap}'s steps as synchronous calls; throws what they throw. */
  #appendBlockMapSync(id: string, header: BlockMapHeader, path: string, text: Buffer): boolean {
    for (let attempt = 0; ; attempt++) {
      let fd: number;
      try {
        fd = openSync(path, constants.O_RDWR | constants.O_APPEND);
      } catch (err) {
        if (!isMissing(err) || attempt > 1) throw err;
        if (statSync(this.generationPath(id, header.fileId, 'part'), { throwIfNoEntry: false }) === undefined)
          return false;
        createBlockMapSync(path, header);
        continue;
      }
      try {
        const head = Buffer.alloc(4096);
        const bytesRead = readSync(fd, head, 0, head.length, 0);
        const existing = parseBlockHeader(head.subarray(0, bytesRead).toString('utf8').split('\n')[0] ?? '');
        if (existing === undefined || !sameHeader(existing, header)) return false;
        if (text.length > 0) writeSync(fd, text, 0, text.length, null);
        return true;
      } finally {
        closeSync(fd);
      }
    }
  }

  async leftovers(): Promise<Leftover[]> {
    const found = new Map<string, Leftover>();
    const add = async (name: string, file: string): Promise<void> => {
      const info = await statPath(join(this.dir, name));
      if (info === undefined) return;
      const id = keyOfFileName(file);
      const entry = found.get(id) ?? { id, mtime: info.mtime, current: false, names: [] };
      if (entry.mtime < info.mtime) entry.mtime = info.mtime;
      entry.names.push(name);
      // Only a generation whose bytes are there can be resumed: a pointer to one whose part is gone (a
      // commit cut short between its rename and its clean-up) is litter like any other.
      if (name === `.${file}.meta`) entry.current = await this.#pointsAtPart(id);
      found.set(id, entry);
    };
    // An identity record beside its recording is no leftover. Every finished recording has both, so rather
    // than keep every name in memory, each half waits only until its other half comes by.
    const finalsAlone = new Set<string>();
    const identitiesAlone = new Map<string, string>();
    for await (const name of this.#names()) {
      if (FINAL.test(name)) {
        if (!identitiesAlone.delete(name)) finalsAlone.add(name);
        continue;
      }
      const file = LEFTOVER.exec(name)?.[1];
      if (file === undefined) continue;
      if (name === `.${file}.id`) {
        if (!finalsAlone.delete(file)) identitiesAlone.set(file, name);
        continue;
      }
      await add(name, file);
    }
    for (const [file, name] of identitiesAlone) await add(name, file);
    return [...found.values()];
  }

  /** Whether the pointer of `id` names a generation whose part file exists. */
  async #pointsAtPart(id: string): Promise<boolean> {
    const meta = await this.readMeta(id);
    return meta !== undefined && (await statPath(this.generationPath(id, meta.fileId, 'part'))) !== undefined;
  }

  async removeLeftovers(id: string, names: readonly string[] = []): Promise<void> {
    await this.#removePartials(id, names);
    if ((await statPath(this.finalPath(id))) === undefined) await unlinkIfPresent(this.identityPath(id));
  }

  /**
   * The pointer first (no reader goes looking for a generation that is about to vanish), then the
   * generation it named, the layout from before generations, and `names` (a listing's leftovers of `id`,
   * its identity record excepted); no listing, so the cost does not grow with the directory.
   */
  async #removePartials(id: string, names: readonly string[]): Promise<void> {
    const file = fileNameOf(checkId(id));
    const meta = await this.readMeta(id).catch(() => undefined);
    await unlinkIfPresent(this.metaPath(id));
    if (meta !== undefined && GENERATION.test(meta.fileId)) await this.#removeGeneration(id, meta.fileId);
    for (const kind of ['part', 'frontier', 'blocks'])
      await unlinkIfPresent(join(this.dir, `.${file}.${kind}`));
    for (const name of names) {
      if (LEFTOVER.exec(name)?.[1] !== file || name === `.${file}.id`) continue;
      await unlinkIfPresent(join(this.dir, name));
    }
  }

  async remove(id: string, options: { everyGeneration?: boolean } = {}): Promise<number | undefined> {
    const final = await statPath(this.finalPath(id));
    // The recording first, so nobody finds it by name while its identity record is already gone.
    await unlinkIfPresent(this.finalPath(id));
    this.#finals.forget(id);
    await unlinkIfPresent(this.identityPath(id));
    await unlinkIfPresent(this.peaksPath(id));
    await this.#removePartials(id, options.everyGeneration === true ? await this.#namesOf(id) : []);
    return final?.size;
  }

  /** The leftover names of `id` in the directory: a scan, for removals that must leave nothing. */
  async #namesOf(id: string): Promise<string[]> {
    const file = fileNameOf(checkId(id));
    const names: string[] = [];
    for await (const name of this.#names()) if (LEFTOVER.exec(name)?.[1] === file) names.push(name);
    return names;
  }

  async readPeaks(id: string): Promise<string | undefined> {
    return readTextIfPresent(this.peaksPath(id));
  }

  async writePeaks(id: string, text: string): Promise<void> {
    try {
      await this.#replace(this.peaksPath(id), text);
    } catch (err) {
      throw storageError(err);
    }
  }

  async finished(): Promise<FinishedFile[]> {
    const files: FinishedFile[] = [];
    for await (const name of this.#names()) {
      const file = FINAL.exec(name)?.[1];
      if (file === undefined) continue;
      const id = keyOfFileName(file);
      try {
        const st = await stat(join(this.dir, name));
        if (st.isFile()) files.push({ id, size: st.size, placedAtMs: Math.floor(st.ctimeMs) });
      } catch (err) {
        if (!isMissing(err)) throw storageError(err);
      }
    }
    return files;
  }

  async volume(): Promise<VolumeSpace | undefined> {
    try {
      const fs = await statfs(this.dir);
      const block = Number(fs.bsize);
      return { totalBytes: Number(fs.blocks) * block, freeBytes: Number(fs.bavail) * block };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOSYS' || code === 'ENOTSUP') return undefined;
      throw storageError(err);
    }
  }

  async sweepTemporary(maxAgeMs: number): Promise<number> {
    let removed = 0;
    const now = Date.now();
    for await (const name of this.#names()) {
      if (!TEMPORARY.test(name)) continue;
      const info = await statPath(join(this.dir, name));
      if (info === undefined || now - info.mtime.getTime() < maxAgeMs) continue;
      await unlinkIfPresent(join(this.dir, name));
      removed++;
    }
    return removed;
  }

  async checkWritable(): Promise<void> {
    const probe = join(this.dir, `.recgate-write-check-${process.pid}-${randomBytes(4).toString('hex')}`);
    try {
      const handle = await this.#create(probe);
      await handle.close();
      await unlink(probe);
    } catch (err) {
      throw storageError(err);
    }
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

  /**
   * Writes `text` aside and renames it over `path`, so readers see the old or the new text, never a mix. Not
   * flushed: its callers' files (a download's pointer, a waveform's peaks) are checked when read, and one a
   * crash emptied or lost counts as absent (a pointer) or is computed again (peaks).
   */
  async #replace(path: string, text: string): Promise<void> {
    const aside = `${path}.tmp-${randomBytes(6).toString('hex')}`;
    // A small file (a download's pointer, written while its first bytes wait): synchronously while the guard
    // allows. A directory removed meanwhile is left to the way below, which recreates it.
    if (metadataSync.on && metadataSync.time(() => replaceSync(aside, path, text))) return;
    const handle = await this.#create(aside);
    try {
      await handle.writeFile(text);
    } finally {
      await handle.close();
    }
    try {
      await rename(aside, path);
    } catch (err) {
      await unlink(aside).catch(() => undefined);
      throw err;
    }
  }

  /** Creates a new file; recreates the directory first if it was removed while the gateway ran. */
  async #create(path: string): Promise<FileHandle> {
    try {
      return await open(path, 'wx+');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      await mkdir(this.dir, { recursive: true });
      return open(path, 'wx+');
    }
  }

  /** Refuses, with RECGATE_STORAGE_FULL, a download that the volume has no room for. */
  async #ensureRoom(bytes: number): Promise<void> {
    if (bytes <= 0) return;
    let free: number;
    try {
      const fs = metadataSync.on ? metadataSync.time(() => statfsSync(this.dir)) : await statfs(this.dir);
      free = Number(fs.bavail) * Number(fs.bsize);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // A missing directory is recreated by the create that follows; a platform without statfs is not checked.
      if (code === 'ENOENT' || code === 'ENOSYS' || code === 'ENOTSUP') return;
      throw err;
    }
    let promised = 0;
    for (const writer of this.#writers) promised += writer.remaining;
    if (free - promised >= bytes + HEADROOM_BYTES) return;
    throw createError('RECGATE_STORAGE_FULL', {
      cause: new Error(
        `${bytes} bytes needed in ${this.dir}, ${free} free of which ${promised} are promised to downloads in progress`,
      ),
    });
  }

  /**
   * Copies into the new generation `fileId` the first `from.length` bytes of generation `from.fileId`, and the
   * slices its block map vouches for beyond them (with their claims, so the slice budget stays spent), when
   * the map was checked against the same validators. Resolves to the prefix length copied.
   */
  async #copyFrom(
    id: string,
    fileId: string,
    from: ResumeFrom,
    input: PartialMetaInput,
    to: FileHandle,
    created: string[],
  ): Promise<number> {
    const source = await openFile(this.generationPath(id, from.fileId, 'part'), 'r');
    if (source === undefined) return 0;
    try {
      const length = await copyRange(source, to, 0, from.length);
      const map = await this.readBlockMap(id, from.fileId);
      if (
        map === undefined ||
        map.records.some((r) => r.t === 'off') ||
        map.header.size !== input.size ||
        map.header.etag !== input.etag ||
        map.header.lastModified !== input.lastModified
      ) {
        return length;
      }
      const kept: BlockRecord[] = [];
      for (const record of map.records) {
        if (record.t === 'claim') kept.push(record);
        if (record.t !== 'have' || record.end <= length) continue;
        const start = Math.max(record.start, length);
        if ((await copyRange(source, to, start, record.end - start)) === record.end - start) {
          kept.push({ t: 'have', start, end: record.end });
        }
      }
      const path = this.generationPath(id, fileId, 'blocks');
      await this.#createBlockMap(path, { ...map.header, fileId }, kept);
      created.push(path);
      return length;
    } finally {
      await source.close().catch(() => undefined);
    }
  }

  async #removeGeneration(id: string, fileId: string): Promise<void> {
    for (const file of ['part', 'frontier', 'blocks'] as const) {
      await unlinkIfPresent(this.generationPath(id, fileId, file));
    }
  }

  /** The identity record of `id`, if it describes the file with inode `ino` and size `size`. */
  async #describe(id: string, ino: bigint, size: bigint): Promise<FinalIdentity | undefined> {
    const record = parseJsonObject((await readTextIfPresent(this.identityPath(id))) ?? '');
    if (
      record === undefined ||
      record.v !== 1 ||
      record.ino !== String(ino) ||
      record.size !== Number(size) ||
      typeof record.recordingSid !== 'string' ||
      typeof record.generation !== 'string' ||
      !nullableString(record.etag) ||
      !nullableString(record.lastModified)
    ) {
      return undefined;
    }
    const encryption = parseStoredEncryption(record.encryption);
    // Ciphertext whose key details are unreadable has no usable identity: it is downloaded again.
    if (record.encryption !== undefined && encryption === undefined) return undefined;
    return {
      recordingSid: record.recordingSid,
      etag: record.etag as string | null,
      lastModified: record.lastModified as string | null,
      generation: record.generation,
      ...(encryption === undefined ? {} : { encryption }),
    };
  }

  /** The directory's names one at a time, in bounded memory however many files it holds. */
  async *#names(): AsyncGenerator<string> {
    let dir: Dir;
    try {
      dir = await opendir(this.dir, { bufferSize: 256 });
    } catch (err) {
      if (isMissing(err)) return;
      throw storageError(err);
    }
    try {
      for await (const entry of dir) yield entry.name;
    } catch (err) {
      throw storageError(err);
    }
  }

  /** Creates the block map with its header (and `records`) in one step; a map another process made first wins. */
  async #createBlockMap(path: string, header: BlockMapHeader, records: BlockRecord[] = []): Promise<void> {
    const aside = `${path}.tmp-${randomBytes(6).toString('hex')}`;
    await writeFile(aside, blockMapText(header, records));
    try {
      await link(aside, path).catch((err: unknown) => {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      });
    } finally {
      await unlink(aside).catch(() => undefined);
    }
  }

  /** Holder only: commits `writer`'s generation (see {@link PartialWriter.commit}). */
  async commit(writer: FsPartialWriter, handle: FileHandle, options: CommitOptions): Promise<FinalInfo> {
    const id = writer.id;
    const fileId = writer.fileId;
    let locked = false;
    try {
      // Slice writers hold byte-range locks on their ranges; the whole-file lock waits for them to let go,
      // and a slice writer that locks after the rename sees the path gone and stops (FsSliceHandle.claim).
      const deadline = Date.now() + this.commitWaitMs;
      for (;;) {
        locked = osTryLock(handle.fd, 0, 0);
        if (locked || Date.now() >= deadline) break;
        await sleep(5);
      }
      const st = await handle.stat({ bigint: true });
      if (Number(st.size) !== options.expectedSize || writer.length !== options.expectedSize) {
        throw createError('RECGATE_STORAGE_ERROR', {
          message: 'The downloaded recording does not have the expected size',
          cause: new Error(`file ${st.size}, written ${writer.length}, expected ${options.expectedSize}`),
        });
      }
      await handle.utimes(options.mtime, options.mtime);
      await handle.sync();
      await options.fence();
      const identity: FinalIdentity = { ...options.identity, generation: fileId };
      const record = { v: 1, ...identity, size: options.expectedSize, ino: String(st.ino) };
      await this.#writeIdentity(id, writer, JSON.stringify(record));
      await rename(this.generationPath(id, fileId, 'part'), this.finalPath(id));
      await this.syncDir();
      this.#writers.delete(writer);
      // The frontier is the identity record now; a block map, if slices made one, goes.
      await unlinkIfPresent(this.generationPath(id, fileId, 'blocks')).catch(() => undefined);
      if ((await this.readMeta(id).catch(() => undefined))?.fileId === fileId) {
        await unlinkIfPresent(this.metaPath(id)).catch(() => undefined);
      }
      const info: FinalInfo = { ...fileInfo(st), mtime: options.mtime, identity };
      return info;
    } catch (err) {
      throw storageError(err);
    } finally {
      if (locked) {
        try {
          osUnlock(handle.fd, 0, 0);
        } catch {
          // Closing the handle releases it anyway.
        }
      }
    }
  }

  /**
   * Puts the identity record `text`, flushed, under its name, before the recording is renamed into place.
   * It is written over the generation's frontier file, which has no use left once every byte is written
   * and flushed, and that file is renamed to the record's name: a commit creates no file and leaves none to
   * delete (on ext4 without a journal every new file costs CPU; see `../../io/file-system.ts`). Every byte
   * is written and flushed by then, and a reader of the frontier takes the record of its generation for the
   * whole size (`parseFrontier`): a follower meanwhile, or a holder taking over after a crash before the
   * rename, finds the download complete. A read torn between the line and the record parses as neither and
   * is made again. Readers of the record see it only under its name, whole.
   */
  async #writeIdentity(id: string, writer: FsPartialWriter, text: string): Promise<void> {
    const frontier = writer.frontierHandle;
    const bytes = Buffer.from(text);
    await writeAll(frontier, bytes, 0);
    await frontier.truncate(bytes.length);
    await frontier.sync();
    await rename(this.generationPath(id, writer.fileId, 'frontier'), this.identityPath(id));
  }

  forget(writer: FsPartialWriter): void {
    this.#writers.delete(writer);
  }
}

function checkId(id: string): string {
  if (!ID.test(id)) throw new TypeError(`recording id must match ^${KEY_PATTERN}$`);
  return id;
}

function readBootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    // Without a kernel boot id, the boot time to the minute tells boots apart.
    return `boot-${Math.round((Date.now() / 1000 - uptime()) / 60)}`;
  }
}

/** This boot's id, as partials record it. */
export const BOOT_ID = readBootId();

/**
 * Writes `text` to the new file `aside` and renames it over `path`, synchronously. `false` when the directory
 * is gone (nothing was written); throws other failures, leaving no `aside` behind.
 */
function replaceSync(aside: string, path: string, text: string): boolean {
  try {
    writeFileSync(aside, text, { flag: 'wx' });
  } catch (err) {
    if (isMissing(err)) return false;
    // A write cut short (a full volume) may have left the file.
    try {
      unlinkSync(aside);
    } catch {}
    throw err;
  }
  try {
    renameSync(aside, path);
    return true;
  } catch (err) {
    try {
      unlinkSync(aside);
    } catch {}
    throw err;
  }
}

/** A new block map's text: its header line, then `records`. */
function blockMapText(header: BlockMapHeader, records: BlockRecord[]): string {
  return [{ v: 1, ...header }, ...records].map((line) => `${JSON.stringify(line)}\n`).join('');
}

/** `#createBlockMap` of an empty map, synchronously: written aside, linked into place unless one is there. */
function createBlockMapSync(path: string, header: BlockMapHeader): void {
  const aside = `${path}.tmp-${randomBytes(6).toString('hex')}`;
  try {
    writeFileSync(aside, blockMapText(header, []));
    try {
      linkSync(aside, path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  } finally {
    try {
      unlinkSync(aside);
    } catch {}
  }
}
