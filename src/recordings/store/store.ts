/**
 * Where recordings live on disk, finished and in progress. Code outside this folder names only
 * {@link RecordingStore}; `fs.ts` implements it on a local (or shared) directory.
 *
 * A recording has at most one finished file, read by anyone, and an identity record beside it that says
 * which recording (recording SID, upstream ETag) the file holds; the record is bound to the file itself, so
 * a file whose record is missing or describes another file has no identity and is never served as any
 * recording.
 *
 * A download in progress is a **generation**: a partial file of its own, named by a random id (`fileId`),
 * new for every download attempt, so two writers never share a file, whoever believes it holds the lock.
 * A small sidecar, the pointer, names the current generation and carries what readers in other processes
 * need (size, validators); the holder of the recording's lock (see `../lock/lock.ts`) writes the generation
 * sequentially and publishes how far it got (the frontier); bytes below the frontier never change. Seek-ahead
 * slices (see `../seek-ahead.ts`), fetched by any process, are written at their own offsets beyond the
 * frontier, with the same bytes the sequential download will write there later, and recorded in the
 * generation's block map once on disk; so bytes of a partial are readable only below the frontier or inside
 * a block-map range, never merely because the file is that long. Finishing renames the generation's file
 * into place, so a handle opened on the partial keeps reading the same bytes from the finished file.
 *
 * Methods say "miss" with `undefined`, never with an exception; they throw RecgateError
 * (RECGATE_STORAGE_FULL, RECGATE_STORAGE_ERROR) when storage fails.
 */
import type { Readable } from 'node:stream';

/** Bytes one read moves from disk to a response: the unit of the constant-memory guarantee. */
export const READ_CHUNK = 64 * 1024;

/**
 * What opens a recording kept encrypted on disk (`--store-encrypted`): Twilio's `encryption_details`,
 * base64 as Twilio sends them. The CEK is the wrapped one; the unwrapped key is never written anywhere.
 */
export interface StoredEncryption {
  /** The RSA-wrapped AES-256 content key. */
  encryptedCek: string;
  /** The 12-byte GCM IV. */
  iv: string;
}

/** `value` as {@link StoredEncryption}, or `undefined` when it is not one (absent, torn, foreign). */
export function parseStoredEncryption(value: unknown): StoredEncryption | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { encryptedCek, iv } = value as Record<string, unknown>;
  return typeof encryptedCek === 'string' && typeof iv === 'string' ? { encryptedCek, iv } : undefined;
}

/** What the lock holder knows about the generation it is writing, shared with readers in other processes. */
export interface PartialMeta {
  recordingSid: string;
  /** Size of the whole recording per the upstream, or `null` when the upstream did not say. */
  size: number | null;
  /** The upstream's ETag, used as `If-Range` when a later holder resumes. */
  etag: string | null;
  /** The upstream's Last-Modified (HTTP date). */
  lastModified: string | null;
  /** Whether the upstream serves byte ranges, so a later holder may resume instead of restarting. */
  acceptsRanges: boolean;
  /** When this recording's download started (ISO 8601); a resumed generation keeps its predecessor's. */
  startedAt: string;
  /**
   * Set when the bytes are the ciphertext and GCM tag of an encrypted recording (`--store-encrypted`): what
   * readers need to decrypt them. `size` then counts the tag. @default absent (the bytes are the recording)
   */
  encryption?: StoredEncryption | undefined;
  /** The generation: a random id naming this attempt's file, the same on every host. Set by the store. */
  fileId: string;
  /**
   * The boot the bytes were written in; set by the store. Bytes written before an OS crash may not have
   * reached the disk, so a partial from another boot is never resumed.
   */
  bootId: string;
}

export type PartialMetaInput = Omit<PartialMeta, 'fileId' | 'bootId'>;

export interface FileInfo {
  /** Identifies the open file within this process (a renamed file keeps its id). */
  fileId: string;
  size: number;
  mtime: Date;
}

/** Which recording a finished file holds, as recorded when it was committed. */
export interface FinalIdentity {
  recordingSid: string;
  /** The upstream's ETag for the recording's bytes, if it gave one. */
  etag: string | null;
  /** The upstream's Last-Modified, if it gave one. */
  lastModified: string | null;
  /** The generation that was committed. */
  generation: string;
  /** Set when the file is ciphertext and tag, kept encrypted ({@link PartialMeta.encryption}). */
  encryption?: StoredEncryption | undefined;
}

export interface FinalInfo extends FileInfo {
  /**
   * What the file holds; `undefined` when its identity record is missing or describes another file (a crash
   * between the record and the rename, or a file from before identity records existed). Such a file is
   * never served: the next download replaces it.
   */
  identity: FinalIdentity | undefined;
}

/** A read handle on one file; it keeps reading the same file if the file is renamed or unlinked. */
export interface ReadHandle {
  readonly fileId: string;
  /** Reads up to `length` bytes at `position`; resolves to the count read, 0 at the end of the file. */
  read(buffer: Buffer, offset: number, length: number, position: number): Promise<number>;
  /** The file's current size. */
  size(): Promise<number>;
  /** Idempotent. */
  close(): Promise<void>;
}

/** A read handle on a finished recording, with what it holds. */
export interface FinalHandle extends ReadHandle {
  readonly info: FinalInfo;
}

export interface CommitOptions {
  /** The size the recording must have; anything else is refused. */
  expectedSize: number;
  /** Set as the file's mtime (the upstream's Last-Modified). */
  mtime: Date;
  /** Recorded beside the file: which recording this is. */
  identity: Omit<FinalIdentity, 'generation'>;
  /**
   * Called after the file is flushed, immediately before it is renamed into place; if it throws (the lock was
   * lost, a later holder exists), nothing is renamed and the error is rethrown. The fencing check.
   */
  fence(): Promise<void>;
}

/** The lock holder's handle on the generation it writes. */
export interface PartialWriter extends ReadHandle {
  readonly meta: PartialMeta;
  /** The frontier: bytes written sequentially (copied from the previous generation, plus what was appended). */
  readonly length: number;
  /** Writes all of `chunk` at the frontier, then publishes the new frontier to other processes. */
  append(chunk: Uint8Array): Promise<void>;
  /**
   * Makes this generation the finished recording: waits a bounded time for slice handles of other processes
   * to let go of the file (their bytes are the same, but a late write would move the mtime), checks its size
   * is `expectedSize`, sets its mtime, flushes it, runs `fence`, records the identity, renames the file to
   * the final name, flushes the directory and removes the generation's sidecars. Nothing half-written is ever
   * visible under the final name, and a writer that lost its lock never renames. The handle stays readable.
   */
  commit(options: CommitOptions): Promise<FinalInfo>;
}

/** Where a new generation starts from: the first `length` bytes of an earlier generation. */
export interface ResumeFrom {
  fileId: string;
  length: number;
}

/** Describes the generation a block map belongs to, and the validators its slices were checked against. */
export interface BlockMapHeader {
  fileId: string;
  size: number;
  etag: string;
  lastModified: string | null;
}

/**
 * One record of a block map, in append order:
 * - `claim`: a process is about to fetch `[start, end)` (counted against the recording's slice budget
 *   whether or not it succeeds; `token` tells the claimer its own record);
 * - `have`: bytes `[start, end)` of the generation are on disk and were checked against the header;
 * - `off`: seek-ahead is over for this generation (`reason`: `no_range`, `validator_mismatch`); every
 *   `have` is void from then on, and no more claims are made.
 */
export type BlockRecord =
  | { t: 'claim'; token: string; start: number; end: number }
  | { t: 'have'; start: number; end: number }
  | { t: 'off'; reason: string };

export interface BlockMap {
  header: BlockMapHeader;
  records: BlockRecord[];
}

/** A handle for writing one seek-ahead slice into a partial generation, from any process. */
export interface SliceHandle {
  readonly fileId: string;
  /**
   * Claims `[start, end)` against every other slice handle and the committing holder (an advisory byte-range
   * lock); `false` when another handle holds an overlapping claim or the generation was committed or
   * removed meanwhile. Released by `close()`.
   */
  claim(start: number, end: number): Promise<boolean>;
  /** Writes all of `chunk` at `position`. */
  write(chunk: Uint8Array, position: number): Promise<void>;
  /** Idempotent. */
  close(): Promise<void>;
}

/** Files of one recording left in the store that no finished file needs, for sweeping. */
export interface Leftover {
  id: string;
  /** The newest modification time among them. */
  mtime: Date;
  /**
   * Whether one of them is the current generation (the pointer names it and its bytes are there), which a
   * later holder may resume. A pointer to a committed generation (the process died between the rename and
   * the clean-up) is not current.
   */
  current: boolean;
  /** The names of its files in the store, for {@link RecordingStore.removeLeftovers}. */
  names: string[];
}

/** A finished recording found on disk, for filling the cache index once after an upgrade. */
export interface FinishedFile {
  id: string;
  size: number;
  /** When the file was put in place (its inode's change time), epoch ms. */
  placedAtMs: number;
}

/** The volume that holds the recordings. */
export interface VolumeSpace {
  totalBytes: number;
  /** Bytes an unprivileged process may still write. */
  freeBytes: number;
}

export interface RecordingStore {
  /**
   * The boot the partials written now are tagged with ({@link PartialMeta.bootId}): bytes of another boot may
   * not have reached the disk, so they are never resumed.
   */
  readonly bootId: string;

  /**
   * The finished recording, or `undefined`. May answer from descriptors kept open between requests; `fresh`
   * looks at the directory again (after another process may have replaced the file).
   */
  stat(id: string, options?: { fresh?: boolean }): Promise<FinalInfo | undefined>;

  /**
   * Optional. What {@link stat} would answer, at once, when the store has it in memory and trusts it now (a
   * file it keeps open and looked at recently); `undefined` means "ask `stat`", not "no file".
   */
  statNow?(id: string): FinalInfo | undefined;

  /**
   * Streams bytes `start..end` (inclusive) of the finished recording in constant memory. With `fileId` (from
   * {@link stat}), the stream errors rather than read another file that replaced that one meanwhile.
   */
  createReadStream(id: string, start: number, end: number, fileId?: string): Readable;

  /**
   * Optional. Bytes `start..end` of the finished recording at once, in one buffer of the chunk pool
   * (`io/chunks.ts`), when the store can read them cheaply now (a small range of a file it keeps open);
   * `undefined` otherwise, and the caller streams them with {@link createReadStream}. `fileId` as there.
   * Throws RECGATE_STORAGE_ERROR when the read fails.
   */
  read?(id: string, start: number, end: number, fileId?: string): Buffer | undefined;

  /** Releases what the store keeps open between requests (descriptors of finished files). */
  close?(): Promise<void>;

  /** A read handle on the finished recording, or `undefined`. */
  openFinal(id: string): Promise<FinalHandle | undefined>;

  /** The current generation's sidecar, or `undefined` when there is none. Written atomically. */
  readMeta(id: string): Promise<PartialMeta | undefined>;

  /** A read handle on generation `fileId`, or `undefined` when it is gone. */
  openPartial(id: string, fileId: string): Promise<ReadHandle | undefined>;

  /** The frontier the holder published for generation `fileId`, or `undefined` when unknown now. */
  readFrontier(id: string, fileId: string): Promise<number | undefined>;

  /**
   * Lock holder only. Starts a new generation with its own file and makes it the current one: checks there is
   * room for the rest of the recording (`meta.size` less what `from` brings; RECGATE_STORAGE_FULL before any
   * file is made when there is not, counting what other downloads of this process still have to write),
   * copies the first `from.length` bytes of generation `from.fileId` when given, writes the frontier and then
   * the sidecar. The previous current generation's files are removed (a handle open on them keeps reading).
   * Recreates the directory if it vanished.
   */
  beginPartial(id: string, meta: PartialMetaInput, from?: ResumeFrom): Promise<PartialWriter>;

  /**
   * Lock holder only. Removes the current generation (file, frontier, block map) and the sidecar; a miss is
   * not an error.
   */
  discardPartial(id: string): Promise<void>;

  /** Opens generation `fileId` for writing a slice, or `undefined` when it is gone. */
  openSlice(id: string, fileId: string): Promise<SliceHandle | undefined>;

  /** The block map of generation `fileId`, or `undefined` when there is none. Unparsable records are left out. */
  readBlockMap(id: string, fileId: string): Promise<BlockMap | undefined>;

  /**
   * Appends `records` in one atomic append to the block map of generation `header.fileId`, creating the map
   * with `header` when there is none. Resolves `false` (and appends nothing) when that generation is gone or
   * its map has another header. Any process may append.
   */
  appendBlockMap(id: string, header: BlockMapHeader, records: BlockRecord[]): Promise<boolean>;

  /** Partials, sidecars and orphaned identity records present now, by id. */
  leftovers(): Promise<Leftover[]>;

  /**
   * Lock holder (or sweeper holding the lock) only. Removes the leftovers of `id`: the pointer and the
   * generation it names, the files `names` lists (what {@link leftovers} found), and an identity record with
   * no finished file beside it. Without listing the store: its cost does not grow with the number of
   * recordings. Generations nobody points at that `names` does not list stay for the sweep.
   */
  removeLeftovers(id: string, names?: readonly string[]): Promise<void>;

  /**
   * Lock holder only. Removes what is stored for `id`: the finished recording, its identity record, its
   * peaks, and the pointer with the generation it names (as {@link removeLeftovers} does, without listing
   * the store, so an eviction costs the same however many recordings there are). `everyGeneration` (a
   * purge, a recording deleted upstream: nothing of it may stay) also looks through the store for
   * generations nobody points at, which otherwise stay for the sweep. Resolves to the finished file's size,
   * or `undefined` when there was none. Streams already reading the file finish; this process's later
   * `stat`s do not see it, and other processes stop serving it within their descriptors' revalidation time
   * (see final-files.ts).
   */
  remove(id: string, options?: { everyGeneration?: boolean }): Promise<number | undefined>;

  /**
   * The waveform peaks stored beside the finished recording `id` (JSON text written by `writePeaks`), or
   * `undefined`. Optional: a store without it keeps no peaks, and they are computed for every request.
   */
  readPeaks?(id: string): Promise<string | undefined>;

  /**
   * Stores peaks computed from the finished recording `id`, atomically (a reader sees the old text or the new,
   * never a mix); {@link remove} removes them with the recording. Any process may write.
   */
  writePeaks?(id: string, text: string): Promise<void>;

  /** Removes temporary files (half-made sidecars, write probes) older than `maxAgeMs`; resolves to the count. */
  sweepTemporary(maxAgeMs: number): Promise<number>;

  /** The finished recordings on disk now: a directory scan, only for filling an empty cache index. */
  finished(): Promise<FinishedFile[]>;

  /** Size and free space of the recordings volume, or `undefined` where the platform cannot tell. */
  volume(): Promise<VolumeSpace | undefined>;

  /** Throws RECGATE_STORAGE_ERROR / RECGATE_STORAGE_FULL unless a file can be created and removed now. */
  checkWritable(): Promise<void>;
}
