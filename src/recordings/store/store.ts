/**
 * Where recordings live on disk, finished and in progress. Code outside this folder names only
 * {@link RecordingStore}; `fs.ts` implements it on a local (or shared) directory.
 *
 * A recording has at most one finished file (read by anyone) and at most one partial file, written only by
 * the holder of the recording's lock (see `../lock/lock.ts`), with a small metadata sidecar written before
 * the partial's first byte so readers in other processes learn the size. Every generation of the partial is
 * a new file with its own `fileId`; a generation is append-only, so bytes below its current size never
 * change. Finishing renames the partial into place, so a handle opened on the partial keeps reading the same
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
  /** Bytes in the partial (what was there when resumed plus what was appended). */
  readonly length: number;
  /** Appends all of `chunk`. */
  append(chunk: Uint8Array): Promise<void>;
  /**
   * Makes the partial the finished recording: checks its size is `expectedSize`, sets its mtime, flushes it
   * to disk, renames it to the final name, flushes the directory and removes the sidecar. Nothing
   * half-written is ever visible under the final name. The handle stays readable afterwards.
   */
  commit(expectedSize: number, mtime: Date): Promise<FileInfo>;
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

  /** Lock holder only. Removes the partial and its sidecar; a miss is not an error. */
  discardPartial(id: string): Promise<void>;

  /** Partials and sidecars present now, by id. */
  leftovers(): Promise<Leftover[]>;
}
