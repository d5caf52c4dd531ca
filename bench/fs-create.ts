/**
 * What creating a file costs in a directory, before and right after many files were deleted there:
 *
 *   node --import tsx bench/fs-create.ts [--files 1000] [--deleted 4000] DIR...
 *
 * A cold download makes a few short-lived files (its lock, generation, frontier and sidecars written aside;
 * see src/recordings/store/fs.ts), so the data dir's file system shows in every cold figure. ext4 without a
 * journal skips every inode freed in the last minute or more when it picks one for a new file, reading each
 * one's inode table block (`recently_deleted()` in the kernel's fs/ext4/ialloc.c): after thousands of
 * deletions, one create can cost hundreds of microseconds of CPU. A journaled ext4, XFS or tmpfs does no such
 * thing. This prints, per directory, its file system (as the bench header does) and the mean time of one
 * `open(O_CREAT|O_EXCL)` + `close` over `--files` creates: first as the directory stands, then right after
 * `--deleted` files were created and deleted in it. Everything it makes is removed at the end.
 */
import { closeSync, openSync, unlinkSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { describeFileSystem, fileSystemOf } from './lib/procfs.js';

/** Mean microseconds of one create (open with O_CREAT|O_EXCL, then close) over `count` new files. */
function createMany(dir: string, tag: string, count: number): number {
  const started = process.hrtime.bigint();
  for (let i = 0; i < count; i++) closeSync(openSync(path.join(dir, `${tag}-${i}`), 'wx'));
  return Number(process.hrtime.bigint() - started) / 1e3 / count;
}

function deleteMany(dir: string, tag: string, count: number): void {
  for (let i = 0; i < count; i++) unlinkSync(path.join(dir, `${tag}-${i}`));
}

export interface CreateCost {
  dir: string;
  fileSystem: string;
  /** Mean µs per create as the directory's file system stood. */
  beforeUs: number;
  /** Mean µs per create right after `deleted` files were created and deleted. */
  afterUs: number;
}

export async function measureCreates(dir: string, files: number, deleted: number): Promise<CreateCost> {
  const scratch = await mkdtemp(path.join(path.resolve(dir), 'recgate-fs-create-'));
  try {
    const beforeUs = createMany(scratch, 'before', files);
    deleteMany(scratch, 'before', files);
    createMany(scratch, 'churn', deleted);
    deleteMany(scratch, 'churn', deleted);
    const afterUs = createMany(scratch, 'after', files);
    return { dir, fileSystem: describeFileSystem(fileSystemOf(path.resolve(dir))), beforeUs, afterUs };
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { files: { type: 'string', default: '1000' }, deleted: { type: 'string', default: '4000' } },
  });
  const files = Number(values.files);
  const deleted = Number(values.deleted);
  if (positionals.length === 0 || !Number.isInteger(files) || files < 1 || !Number.isInteger(deleted)) {
    throw new Error('usage: bench/fs-create.ts [--files N] [--deleted N] DIR...');
  }
  process.stdout.write(
    `| directory | file system | µs per create | µs per create after ${deleted} deletions |\n| --- | --- | ---: | ---: |\n`,
  );
  for (const dir of positionals) {
    const cost = await measureCreates(dir, files, deleted);
    process.stdout.write(
      `| ${cost.dir} | ${cost.fileSystem} | ${cost.beforeUs.toFixed(1)} | ${cost.afterUs.toFixed(1)} |\n`,
    );
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    process.stderr.write(`fs-create: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
