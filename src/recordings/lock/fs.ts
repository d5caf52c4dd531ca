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
 * The directory is created again when it vanished at run time (someone deleted the recordings directory):
 * otherwise every first request for a recording would fail until a restart.
 *
 * Whether such locks hold across hosts on a network volume depends on the filesystem (NFSv4 forwards them,
 * many others do not); use a database-backed locker there.
 */
import { randomInt } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { mkdir, open, readdir, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { tryLock as osTryLock, unlock as osUnlock } from 'fs-native-extensions';
import { createError, storageError } from '../../errors.js';
import type { Lock, Locker } from './lock.js';

export interface FsLockerOptions {
  /** Directory of the lock files; created again (with its parents) if it is missing when a lock is taken. */
  dir: string;
  /**
   * Pause between two tries while waiting, in milliseconds; each pause adds a random jitter of up to half of
   * it so waiters do not retry in step. @default 15
   */
  pollIntervalMs?: number;
}

const ID = /^[A-Za-z0-9_-]{1,128}$/;
const LOCK_FILE = /^\.([A-Za-z0-9_-]{1,128})\.lock$/;

export class FsLocker implements Locker {
  readonly dir: string;
  readonly pollIntervalMs: number;

  constructor(options: FsLockerOptions) {
    if (typeof options !== 'object' || options === null) throw new TypeError('options must be an object');
    if (typeof options.dir !== 'string' || options.dir === '') {
      throw new TypeError('options.dir must be a non-empty string');
    }
    const poll = options.pollIntervalMs ?? 15;
    if (!Number.isInteger(poll) || poll < 1 || poll > 10_000) {
      throw new TypeError('options.pollIntervalMs must be an integer between 1 and 10000');
    }
    this.dir = options.dir;
    this.pollIntervalMs = poll;
  }

  newLock(id: string): Lock {
    if (!ID.test(id)) throw new TypeError('lock id must match ^[A-Za-z0-9_-]{1,128}$');
    return new FsLock(this.dir, this.lockPath(id), this.pollIntervalMs);
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

class FsLock implements Lock {
  readonly #dir: string;
  readonly #path: string;
  readonly #pollIntervalMs: number;
  #handle: FileHandle | undefined;
  #held = false;

  constructor(dir: string, path: string, pollIntervalMs: number) {
    this.#dir = dir;
    this.#path = path;
    this.#pollIntervalMs = pollIntervalMs;
  }

  async tryLock(): Promise<boolean> {
    if (this.#held) return true;
    try {
      return await this.#attempt();
    } finally {
      if (!this.#held) await this.#release();
    }
  }

  async lock(signal: AbortSignal): Promise<void> {
    if (this.#held) return;
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
      if (!this.#held) await this.#release();
    }
  }

  async unlock(): Promise<void> {
    if (this.#held) {
      // Unlinking while still holding the lock is what makes removal safe; see the file comment.
      await unlink(this.#path).catch(() => undefined);
      try {
        if (this.#handle) osUnlock(this.#handle.fd);
      } catch {
        // Closing the descriptor below releases the lock anyway.
      }
    }
    this.#held = false;
    await this.#release();
  }

  /** One non-blocking try on the file the path names now; keeps the handle open for the next try. */
  async #attempt(): Promise<boolean> {
    try {
      for (;;) {
        this.#handle ??= await this.#open();
        if (!osTryLock(this.#handle.fd)) return false;
        const mine = await this.#handle.stat();
        const current = await stat(this.#path).catch(() => undefined);
        if (current !== undefined && current.ino === mine.ino && current.dev === mine.dev) {
          this.#held = true;
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

  /** Opens (creating) the lock file, and the directory too if it vanished since the last look. */
  async #open(): Promise<FileHandle> {
    try {
      return await open(this.#path, 'a+');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      await mkdir(this.#dir, { recursive: true });
      return await open(this.#path, 'a+');
    }
  }

  async #release(): Promise<void> {
    const handle = this.#handle;
    this.#handle = undefined;
    this.#held = false;
    await handle?.close().catch(() => undefined);
  }
}
