/**
 * Where recordings live on disk, finished and in progress. Code outside this folder names only
 * {@link RecordingStore}; `fs.ts` implements it on a local (or shared) directory.
 *
 * A recording has at most one finished file (read by anyone) and at most one partial file, with a small
 * metadata sidecar written before the partial's first byte so readers in other processes learn the size.
 * Every generation of the partial is a new file with its own `fileId`. The holder of the recording's lock
 * (see `../lock/lock.ts`) writes it sequentially and publishes how far it got (the frontier); bytes below
 * the frontier never change. Seek-ahead slices (see `../seek-ahead.ts`), fetched by any process, are
 * written at their own offsets beyond the frontier, with the same bytes the sequential download will write
 * there later, and recorded in the generation's block map once on disk; so bytes of the partial are
 * readable only below the frontier or inside a block-map range, never merely because the file is that
 * long. Finishing renames the partial into place, so a handle opened on the partial keeps reading the same
 * bytes from the finished file. Methods say "miss" with `undefined`, never with an exception; they throw
 * RecgateError (RECGATE_STORAGE_FULL, RECGATE_STORAGE_ERROR) when storage fails.
 */
import type { Readable } from 'node:stream';

/** Bytes one read moves from disk to a response: the unit of the constant-memory guarantee. */
export const READ_CHUNK = 64 * 1024;

/** What the lock holder knows about the download it is writing, shared with readers in other processes. */
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
  /** When this generation's download started (ISO 8601). */
  startedAt: string;
  /** The partial generation this sidecar describes; set by the store. */
  fileId: string;
  /**
   * The boot the bytes were written in; set by the store. Bytes written before an OS crash may not have
   * reached the disk, so a partial from another boot is never resumed.
   */
  bootId: string;
}

export type PartialMetaInput = Omit<PartialMeta, 'fileId' | 'bootId'>;

export interface FileInfo {
  /** Identifies the file (its inode); a renamed file keeps its id. */
  fileId: string;
  size: number;
  mtime: Date;
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

/** The lock holder's handle on the partial it writes. */
export interface PartialWriter extends ReadHandle {
  readonly meta: PartialMeta;
  /** The frontier: bytes written sequentially (the published frontier when resumed, plus what was appended). */
  readonly length: number;
  /** Writes all of `chunk` at the frontier, then publishes the new frontier to other processes. */
  append(chunk: Uint8Array): Promise<void>;
  /**
   * Makes the partial the finished recording: waits a bounded time for slice handles of other processes to
   * let go of the file (their bytes are the same, but a late write would move the mtime), checks its size is
   * `expectedSize`, sets its mtime, flushes it to disk, renames it to the final name, flushes the directory
   * and removes the sidecar, frontier and block map. Nothing half-written is ever visible under the final
   * name. The handle stays readable afterwards.
   */
  commit(expectedSize: number, mtime: Date): Promise<FileInfo>;
}

/** Describes the partial generation a block map belongs to, and the validators its slices were checked against. */
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
   * lock); `false` when another handle holds an overlapping claim or the partial was renamed meanwhile.
   * Released by `close()`.
   */
  claim(start: number, end: number): Promise<boolean>;
  /** Writes all of `chunk` at `position`. */
  write(chunk: Uint8Array, position: number): Promise<void>;
  /** Idempotent. */
  close(): Promise<void>;
}

/** A partial or sidecar left in the store, for sweeping. */
export interface Leftover {
  id: string;
  /** The newest modification time among the leftover's files. */
  mtime: Date;
}

export interface RecordingStore {
  /** The finished recording, or `undefined`. */
  stat(id: string): Promise<FileInfo | undefined>;

  /** Streams bytes `start..end` (inclusive) of the finished recording in constant memory. */
  createReadStream(id: string, start: number, end: number): Readable;

  /** Releases what the store keeps open between requests (descriptors of finished files). */
  close?(): Promise<void>;

  /** A read handle on the finished recording, or `undefined`. */
  openFinal(id: string): Promise<ReadHandle | undefined>;

  /** The partial's current file, or `undefined` when there is none. */
  statPartial(id: string): Promise<FileInfo | undefined>;

  /** The partial's sidecar, or `undefined` when it is missing or unreadable (being rewritten). */
  readMeta(id: string): Promise<PartialMeta | undefined>;

  /** A read handle on the partial's current file, or `undefined`. */
  openPartial(id: string): Promise<ReadHandle | undefined>;

  /**
   * Lock holder only. Starts a new, empty generation of the partial (replacing any previous one) and writes
   * its sidecar before returning, so the sidecar exists before the first byte.
   */
  beginPartial(id: string, meta: PartialMetaInput): Promise<PartialWriter>;

  /**
   * Lock holder only. Opens the existing partial for appending when its sidecar describes it and it was
   * written in this boot; `undefined` otherwise.
   */
  resumePartial(id: string): Promise<PartialWriter | undefined>;

  /** Lock holder only. Removes the partial, its sidecar, frontier and block map; a miss is not an error. */
  discardPartial(id: string): Promise<void>;

  /** The frontier the holder published for partial generation `fileId`, or `undefined` when unknown now. */
  readFrontier(id: string, fileId: string): Promise<number | undefined>;

  /** Opens partial generation `fileId` for writing a slice, or `undefined` when it is not the current one. */
  openSlice(id: string, fileId: string): Promise<SliceHandle | undefined>;

  /** The current block map, or `undefined` when there is none. Records that do not parse are left out. */
  readBlockMap(id: string): Promise<BlockMap | undefined>;

  /**
   * Appends `records` in one atomic append to the block map of generation `header.fileId`, creating the map
   * with `header` when there is none. Resolves `false` (and appends nothing) when the existing map belongs to
   * another generation. Any process may append; the holder's `beginPartial` starts a generation without one.
   */
  appendBlockMap(id: string, header: BlockMapHeader, records: BlockRecord[]): Promise<boolean>;

  /** Partials and sidecars present now, by id. */
  leftovers(): Promise<Leftover[]>;
}
