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
import { FsRecordingStore, type RecordingStore } from '../../src/recordings/index.js';
import type { PartialWriter } from '../../src/recordings/store/store.js';
import { openCacheRuntime } from '../../src/runtime.js';
import { until } from '../helpers/common.js';
import { captureLogs } from '../helpers/log-capture.js';
import { JWT_SECRET } from '../helpers/stack.js';
import { audioBytes, FakeUpstream, newRef, readAll, tempDir } from '../recordings/helpers.js';

/** `target`'s property, a method bound to it: its private fields need the real object as `this`. */
function own(target: object, property: string | symbol): unknown {
  const value: unknown = Reflect.get(target, property, target);
  return typeof value === 'function' ? value.bind(target) : value;
}

/** A store whose partial writers wait at `commit` until {@link release}; {@link entered} counts arrivals. */
function gatedStore(inner: RecordingStore): {
  store: RecordingStore;
  entered: () => number;
  release: () => void;
} {
  let entered = 0;
  let release!: () => void;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  const gatedWriter = (writer: PartialWriter): PartialWriter =>
    new Proxy(writer, {
      get(target, property) {
        if (property === 'commit') {
          return async (...args: Parameters<PartialWriter['commit']>) => {
            entered++;
            await gate;
            return target.commit(...args);
          };
        }
        return own(target, property);
      },
    });
  const store = new Proxy(inner, {
    get(target, property) {
      if (property === 'beginPartial') {
        return async (...args: Parameters<RecordingStore['beginPartial']>) =>
          gatedWriter(await target.beginPartial(...args));
      }
      return own(target, property);
    },
  });
  return { store, entered: () => entered, release };
}

it('a download committing as the runtime closes is recorded in the cache index', async (t) => {
  const dataDir = tempDir(t);
  const config = loadConfig({ dataDir, jwtSecret: JWT_SECRET, logLevel: 'silent' }, {});
  // The call log's database, as a gateway opens it before the cache runtime.
  const callLog = await openCallLog(config.databaseUrl, config.dataDir);
  t.after(() => callLog.close());
  const { store, entered, release } = gatedStore(new FsRecordingStore({ dir: recordingsDir(config) }));
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
  await until('the download reaches its commit', () => entered() === 1);
  const closing = runtime.close();
  // Let the close run as far as it can without the commit: in the wrong order, the evictor closes here.
  await new Promise((resolve) => setTimeout(resolve, 50));
  release();
  await closing;
  assert.ok((await body).equals(data), 'the reader got the whole recording');

  const index = await openCacheIndex(runtime.database);
  assert.ok(index !== undefined);
  t.after(() => index.close());
  assert.deepEqual(await index.totals(), { files: 1, bytes: data.length });
  assert.equal((await index.get(ref.ownerCallSid))?.size, data.length);
});
