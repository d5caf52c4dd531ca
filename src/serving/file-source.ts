/**
 * A {@link ByteSource} over a finished file on disk.
 *
 * Size and modification time are read once, by `fs.stat`, when the source is made; each read opens the
 * file by path. That is sound for recgate's files because a recording is written to a temporary name and
 * renamed into place complete: a path names either nothing or the whole, never-changing recording.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { createError, storageError } from '../errors.js';
import { isEntityTag } from './conditional.js';
import type { ByteSource } from './source.js';

export interface FileSourceOptions {
  /** Strong entity tag, quoted (`"RE…-12345"`). */
  etag: string;
  /**
   * Last-Modified to advertise.
   * @default the file's mtime
   */
  lastModified?: Date | undefined;
  /**
   * Read buffer size in bytes: the most one open read holds in memory.
   * @default 65536
   */
  highWaterMark?: number | undefined;
}

export const DEFAULT_FILE_HIGH_WATER_MARK = 64 * 1024;

/**
 * Stats `path` and returns a source for it. Throws RECGATE_STORAGE_ERROR (cause: the fs error, e.g.
 * ENOENT) if the file cannot be stat'ed or is not a regular file, and RECGATE_INTERNAL for invalid options.
 * Read streams report fs errors as they are.
 */
export async function fileSource(path: string, options: FileSourceOptions): Promise<ByteSource> {
  const { etag, lastModified } = options;
  const highWaterMark = options.highWaterMark ?? DEFAULT_FILE_HIGH_WATER_MARK;
  if (typeof etag !== 'string' || !isEntityTag(etag) || etag.startsWith('W/')) {
    throw createError('RECGATE_INTERNAL', { message: 'options.etag must be a strong, quoted entity-tag' });
  }
  if (
    lastModified !== undefined &&
    (!(lastModified instanceof Date) || Number.isNaN(lastModified.getTime()))
  ) {
    throw createError('RECGATE_INTERNAL', { message: 'options.lastModified must be a valid Date' });
  }
  if (!Number.isSafeInteger(highWaterMark) || highWaterMark < 1) {
    throw createError('RECGATE_INTERNAL', { message: 'options.highWaterMark must be a positive integer' });
  }

  let stats: Awaited<ReturnType<typeof stat>>;
  try {
    stats = await stat(path);
  } catch (error) {
    throw storageError(error);
  }
  if (!stats.isFile()) throw storageError(new Error(`${path} is not a regular file`));

  const size = stats.size;
  return {
    size,
    etag,
    lastModified: lastModified ?? stats.mtime,
    createReadStream(start: number, end: number): Readable {
      if (
        !Number.isSafeInteger(start) ||
        !Number.isSafeInteger(end) ||
        start < 0 ||
        start > end ||
        end >= size
      ) {
        throw createError('RECGATE_INTERNAL', {
          message: `read range ${start}-${end} is outside a ${size}-byte file`,
        });
      }
      return createReadStream(path, { start, end, highWaterMark });
    },
  };
}
