/**
 * Types for the parts of `fs-native-extensions` recgate uses. On Linux its locks are open file description
 * locks (`fcntl(F_OFD_SETLK)`), on macOS `flock`: both belong to the open file description, so two
 * descriptors opened separately exclude each other even inside one process, and the kernel releases the
 * lock when the last descriptor of that description closes, including when the process dies.
 */
declare module 'fs-native-extensions' {
  export interface LockOptions {
    /** A shared (read) lock instead of an exclusive one. */
    shared?: boolean;
  }

  /** Takes the lock without blocking; `false` when another description holds it. Throws other errors. */
  export function tryLock(fd: number, offset?: number, length?: number, opts?: LockOptions): boolean;
  export function tryLock(fd: number, opts?: LockOptions): boolean;

  /** Blocks a libuv threadpool thread until the lock is free; cannot be cancelled. */
  export function waitForLock(
    fd: number,
    offset?: number,
    length?: number,
    opts?: LockOptions,
  ): Promise<void>;

  export function unlock(fd: number, offset?: number, length?: number): void;
}
