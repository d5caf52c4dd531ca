/**
 * The cache runtime's shutdown order (src/runtime.ts, e29bd12): a download that commits while the process
 * stops is still recorded in the cache index. The cache closes first and waits for that commit; only then
 * does the evictor, which records it, close. In the other order the evictor was closed when the commit told
 * it, and the index missed the file (`recgate stats` after a stop counted 1 file of 2).
 *
 * The commit is held at a gate (a store whose writers' `commit` waits for the test), so the stop begins with
 * the download in its last step every time, not when a race happens to put it there.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { openCallLog } from '../../src/call-log/index.js';
import { loadConfig, recordingsDir } from '../../src/config/config.js';
import { openCacheIndex } from '../../src/recordings/cache-index/open.js';
import { FsRecordingStore } from '../../src/recordings/index.js';
import type { PartialWriter } from '../../src/recordings/store/store.js';
import { openCacheRuntime } from '../../src/runtime.js';
import { until } from '../helpers/common.js';
import { captureLogs } from '../helpers/log-capture.js';
import { JWT_SECRET } from '../helpers/stack.js';
import { audioBytes, FakeUpstream, newRef, readAll, tempDir } from '../recordings/helpers.js';

/**
 * A store whose partial writers wait at `commit` until {@link release}; {@link entered} counts arrivals. A
 * subclass with a patched writer, as cache.test.ts' faulty stores are.
 */
class GatedStore extends FsRecordingStore {
  entered = 0;
  release!: () => void;
  readonly #gate = new Promise<void>((resolve) => {
    this.release = resolve;
  });

  override async beginPartial(...args: Parameters<FsRecordingStore['beginPartial']>): Promise<PartialWriter> {
    const writer = await super.beginPartial(...args);
    const commit = writer.commit.bind(writer);
    (writer as { commit: PartialWriter['commit'] }).commit = async (options) => {
      this.entered++;
      await this.#gate;
      return commit(options);
    };
    return writer;
  }
}

it('a download committing as the runtime closes is recorded in the cache index', async (t) => {
  const dataDir = tempDir(t);
  const config = loadConfig({ dataDir, jwtSecret: JWT_SECRET, logLevel: 'silent' }, {});
  // The call log's database, as a gateway opens it before the cache runtime.
  const callLog = await openCallLog(config.databaseUrl, config.dataDir);
  t.after(() => callLog.close());
  const store = new GatedStore({ dir: recordingsDir(config) });
  const data = audioBytes(40_000);
  const runtime = await openCacheRuntime(config, {
    upstream: new FakeUpstream({ data }),
    logger: captureLogs({ level: 'warn' }).logger,
    store,
  });
  assert.ok(runtime.index !== undefined && runtime.evictor !== undefined, 'a bounded-disk index on SQLite');

  const ref = newRef();
  const recording = await runtime.cache.open(ref);
  const body = readAll(recording.createReadStream(0, data.length - 1));
  await until('the download reaches its commit', () => store.entered === 1);
  const closing = runtime.close();
  // Let the close run as far as it can without the commit: in the wrong order, the evictor closes here.
  await new Promise((resolve) => setTimeout(resolve, 50));
  store.release();
  await closing;
  assert.ok((await body).equals(data), 'the reader got the whole recording');

  const index = await openCacheIndex(runtime.database);
  assert.ok(index !== undefined);
  t.after(() => index.close());
  assert.deepEqual(await index.totals(), { files: 1, bytes: data.length });
  assert.equal((await index.get(ref.ownerCallSid))?.size, data.length);
});
