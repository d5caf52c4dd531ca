/**
 * {@link Locker} for the processes of one host: an exclusive kernel lock on `{dir}/.{id}.lock`.
 *
 * `fs-native-extensions` takes open-file-description locks (`fcntl(F_OFD_SETLK)` on Linux, `flock` on
 * macOS). Such a lock belongs to the description the handle opened, so two handles exclude each other even
 * inside one process, and the kernel drops it when the holder's descriptor closes or the process dies.
 * Waiting polls the non-blocking `tryLock` with jitter instead of the library's `waitForLock`, which parks a
 * libuv threadpool thread and cannot be cancelled.
 *
 * The holder unlinks the lock file before it releases the lock, so files do not pile up. A waiter that then
 * gets the lock on the unlinked inode notices that the path now names another file (or none) and starts
 * over on the file at the path: the lock always means "the lock on the inode the path names".
 *
 * The lock is lost when the path stops naming the inode the holder locked: someone unlinked the file or
 * deleted the recordings directory, and the next handle locks a new file at the path. The kernel cannot
 * tell, so the holder looks: `verify()` and a heartbeat every `heartbeatMs` stat the path and compare its
 * device and inode with the locked file's. A hold's token is `"<inode>:<16 hex digits>"`, the locked file's
 * inode number and a random id drawn for the hold: unique per hold, but not ordered.
 *
 * The directory is created again when it vanished at run time (someone deleted the recordings directory):
 * otherwise every first request for a recording would fail until a restart.
 *
 * Whether such locks hold across hosts on a network volume depends on the filesystem (NFSv4 forwards them,
 * many others do not); use a database-backed locker there.
 */
import { randomBytes, randomInt } from 'node:crypto';
import type { BigIntStats } from 'node:fs';
import { close, fstat, fstatSync, mkdirSync, open, openSync, statSync } from 'node:fs';
import { mkdir, readdir, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { tryLock as osTryLock, unlock as osUnlock } from 'fs-native-extensions';
import { createError, storageError } from '../../errors.js';
import { metadataSync } from '../../io/sync-guard.js';
import { KEY_PATTERN } from '../variant.js';
import { Hold, NEVER_LOST, notHeld } from './hold.js';
import type { Lock, Locker } from './lock.js';

export interface FsLockerOptions {
  /** Directory of the lock files; created again (with its parents) if it is missing when a lock is taken. */
  dir: string;
  /**
   * Pause between two tries while waiting, in milliseconds; each pause adds a random jitter of up to half of
   * it so waiters do not retry in step. @default 15
   */
  pollIntervalMs?: number;
  /**
   * Pause between two checks that a held lock file is still the one at its path, in milliseconds: a lost
   * lock aborts `lost` within about this long. Each check is one `stat`. The checks run only once `lost` is
   * read during the hold (a download reads it when it starts, not while it waits in the admission queue),
   * the first at once if the hold is older than this. @default 1000
   */
  heartbeatMs?: number;
}

/** A cache key: an id, with a variant's suffix (see `../variant.ts`). */
const ID = new RegExp(`^${KEY_PATTERN}$`);
const LOCK_FILE = new RegExp(`^\\.(${KEY_PATTERN})\\.lock$`);

const openAsync = promisify(open);
const fstatAsync = promisify(fstat);
const closeAsync = promisify(close);

export class FsLocker implements Locker {
  readonly dir: string;
  readonly pollIntervalMs: number;
  readonly heartbeatMs: number;

  constructor(options: FsLockerOptions) {
    if (typeof options !== 'object' || options === null) throw new TypeError('options must be an object');
    if (typeof options.dir !== 'string' || options.dir === '') {
      throw new TypeError('options.dir must be a non-empty string');
    }
    const poll = options.pollIntervalMs ?? 15;
    if (!Number.isInteger(poll) || poll < 1 || poll > 10_000) {
      throw new TypeError('options.pollIntervalMs must be an integer between 1 and 10000');
    }
    const heartbeat = options.heartbeatMs ?? 1000;
    if (!Number.isInteger(heartbeat) || heartbeat < 1 || heartbeat > 600_000) {
      throw new TypeError('options.heartbeatMs must be an integer between 1 and 600000');
    }
    this.dir = options.dir;
    this.pollIntervalMs = poll;
    this.heartbeatMs = heartbeat;
  }

  newLock(id: string): Lock {
    if (!ID.test(id)) throw new TypeError(`lock id must match ^${KEY_PATTERN}$`);
    return new FsLock(this.dir, this.lockPath(id), this.pollIntervalMs, this.heartbeatMs);
  }

  /** The lock file of `id`. */
  lockPath(id: string): string {
    return join(this.dir, `.${id}.lock`);
  }

  /** Removes lock files nobody holds (left by crashed holders); a missing directory holds none. */
  async sweep(): Promise<number> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
      throw storageError(err);
    }
    let removed = 0;
    for (const name of names) {
      const id = LOCK_FILE.exec(name)?.[1];
      if (id === undefined) continue;
      const lock = this.newLock(id);
      if (await lock.tryLock()) {
        await lock.unlock();
        removed++;
      }
    }
    return removed;
  }
}

/** Device and inode of a file: what "the same file" means here. */
interface FileId {
  dev: bigint;
  ino: bigint;
}

class FsLock implements Lock {
  readonly #dir: string;
  readonly #path: string;
  readonly #pollIntervalMs: number;
  readonly #heartbeatMs: number;
  /** The open lock file's descriptor: between tries while waiting, and while held. */
  #fd: number | undefined;
  /** The current or last hold, until unlock. */
  #hold: Hold | undefined;
  /** The file the current hold locked. */
  #locked: FileId | undefined;

  constructor(dir: string, path: string, pollIntervalMs: number, heartbeatMs: number) {
    this.#dir = dir;
    this.#path = path;
    this.#pollIntervalMs = pollIntervalMs;
    this.#heartbeatMs = heartbeatMs;
  }

  get lost(): AbortSignal {
    return this.#hold?.lost ?? NEVER_LOST;
  }

  get token(): string | undefined {
    return this.#hold?.token;
  }

  verify(): Promise<void> {
    return this.#hold?.verify() ?? Promise.reject(notHeld());
  }

  async tryLock(): Promise<boolean> {
    if (this.#hold?.held) return true;
    try {
      return await this.#attempt();
    } finally {
      if (!this.#hold?.held) await this.#release();
    }
  }

  async lock(signal: AbortSignal): Promise<void> {
    if (this.#hold?.held) return;
    const timeout = () => createError('RECGATE_LOCK_TIMEOUT', { cause: signal.reason });
    if (signal.aborted) throw timeout();
    try {
      for (;;) {
        if (await this.#attempt()) return;
        if (signal.aborted) throw timeout();
        const pause = this.#pollIntervalMs + randomInt(Math.floor(this.#pollIntervalMs / 2) + 1);
        try {
          await sleep(pause, undefined, { signal });
        } catch {
          throw timeout();
        }
      }
    } finally {
      if (!this.#hold?.held) await this.#release();
    }
  }

  async unlock(): Promise<void> {
    const hold = this.#hold;
    const locked = this.#locked;
    this.#hold = undefined;
    this.#locked = undefined;
    if (hold?.held && locked !== undefined) {
      await hold.end();
      // Unlinking while still holding the lock is what makes removal safe (see the file comment); but only
      // our own file: if the path names another one now, the lock was lost and that file is its new holder's.
      if (sameFile(await stat(this.#path, { bigint: true }).catch(() => undefined), locked)) {
        await unlink(this.#path).catch(() => undefined);
      }
      try {
        if (this.#fd !== undefined) osUnlock(this.#fd);
      } catch {
        // Closing the descriptor below releases the lock anyway.
      }
    } else {
      await hold?.end();
    }
    await this.#release();
  }

  /**
   * One non-blocking try on the file the path names now; keeps the descriptor open for the next try. The
   * open and the two stats run synchronously while `io/sync-guard.ts` allows (a cold request's lock is on its
   * way to the upstream, and a busy event loop would hold each thread-pool round trip back).
   */
  async #attempt(): Promise<boolean> {
    try {
      for (;;) {
        this.#fd ??= await this.#open();
        if (!osTryLock(this.#fd)) return false;
        const [mine, current] = metadataSync.on
          ? metadataSync.time(() => [fstatSync(this.#fd!, { bigint: true }), this.#statSync()] as const)
          : ([
              await fstatAsync(this.#fd, { bigint: true }),
              await stat(this.#path, { bigint: true }).catch(() => undefined),
            ] as const);
        if (sameFile(current, mine)) {
          this.#begin(mine);
          return true;
        }
        // A previous holder unlinked this inode after we opened it: the lock now lives on the path's new file.
        await this.#release();
      }
    } catch (err) {
      await this.#release();
      throw storageError(err);
    }
  }

  /** The path's stats now, or `undefined` if they cannot be read (as the asynchronous look treats it). */
  #statSync(): BigIntStats | undefined {
    try {
      return statSync(this.#path, { bigint: true, throwIfNoEntry: false });
    } catch {
      return undefined;
    }
  }

  #begin(file: BigIntStats): void {
    const locked: FileId = { dev: file.dev, ino: file.ino };
    this.#locked = locked;
    this.#hold = new Hold({
      token: `${file.ino}:${randomBytes(8).toString('hex')}`,
      heartbeatMs: this.#heartbeatMs,
      // Also the fencing check before a commit, so it looks synchronously too while the guard allows.
      check: async () => {
        const missing = (err: NodeJS.ErrnoException) => {
          if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined;
          throw err;
        };
        const current = metadataSync.on
          ? metadataSync.time(() => {
              try {
                return statSync(this.#path, { bigint: true });
              } catch (err) {
                return missing(err as NodeJS.ErrnoException);
              }
            })
          : await stat(this.#path, { bigint: true }).catch(missing);
        if (current === undefined) throw new Error(`the lock file ${this.#path} was removed`);
        if (!sameFile(current, locked)) throw new Error(`the lock file ${this.#path} was replaced`);
      },
      // The kernel lock on an inode the path no longer names protects nothing; let it go.
      drop: () => void this.#release(),
      // Each beat is a stat per hold, for nothing else but `lost`: a hold nobody watches is not checked.
      whileWatched: true,
    });
  }

  /** Opens (creating) the lock file, and the directory too if it vanished since the last look. */
  async #open(): Promise<number> {
    if (metadataSync.on) {
      return metadataSync.time(() => {
        try {
          return openSync(this.#path, 'a+');
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
          mkdirSync(this.#dir, { recursive: true });
          return openSync(this.#path, 'a+');
        }
      });
    }
    try {
      return await openAsync(this.#path, 'a+');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      await mkdir(this.#dir, { recursive: true });
      return await openAsync(this.#path, 'a+');
    }
  }

  async #release(): Promise<void> {
    const fd = this.#fd;
    this.#fd = undefined;
    if (fd !== undefined) await closeAsync(fd).catch(() => undefined);
  }
}

function sameFile(a: FileId | undefined, b: FileId): boolean {
  return a !== undefined && a.ino === b.ino && a.dev === b.dev;
}
