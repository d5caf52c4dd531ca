import assert from 'node:assert/strict';
import { readdirSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { FinalFiles } from '../../src/recordings/store/final-files.js';
import { readAll, tempDir } from '../helpers/common.js';

const openFds = () => readdirSync('/proc/self/fd').length;

/**
 * The process's descriptor count once it stops moving: descriptors of an earlier case (a FinalFiles closed
 * in its t.after, a stream ending) close asynchronously and may still be going when the next case counts,
 * which then sees one fewer later than it expects (CI, 2026-12-01).
 */
async function quietFds(): Promise<number> {
  let last = openFds();
  for (let i = 0; i < 100; i++) {
    await sleep(10);
    const now = openFds();
    if (now === last) return now;
    last = now;
  }
  return last;
}

describe('FinalFiles', () => {
  it('says undefined for a missing file and remembers nothing', async (t) => {
    const dir = tempDir(t);
    const files = new FinalFiles(4);
    assert.equal(await files.stat('a', join(dir, 'a.mp3')), undefined);
    assert.equal(files.createReadStream('a', 0, 0), undefined);
  });

  it('opens a finished file once and serves ranges from that descriptor', async (t) => {
    const dir = tempDir(t);
    const body = Buffer.from(Array.from({ length: 300_000 }, (_, i) => i % 251));
    writeFileSync(join(dir, 'a.mp3'), body);
    const files = new FinalFiles(4);
    t.after(() => files.close());
    const before = await quietFds();
    const info = await files.stat('a', join(dir, 'a.mp3'));
    assert.equal(info?.size, body.length);
    await Promise.all([files.stat('a', join(dir, 'a.mp3')), files.stat('a', join(dir, 'a.mp3'))]);
    assert.equal(openFds(), before + 1, 'one descriptor however often it is asked');
    assert.deepEqual(await readAll(files.createReadStream('a', 0, body.length - 1)!), body);
    assert.deepEqual(
      await readAll(files.createReadStream('a', 70_000, 200_000)!),
      body.subarray(70_000, 200_001),
    );
    assert.deepEqual(await readAll(files.createReadStream('a', 5, 5)!), body.subarray(5, 6));
    // The descriptor outlives the name: a renamed-over or deleted file keeps being served as it was.
    unlinkSync(join(dir, 'a.mp3'));
    assert.deepEqual(await readAll(files.createReadStream('a', 0, 9)!), body.subarray(0, 10));
  });

  it('retires a removed file: new requests look again, a request that found it reads it whole, then it closes', async (t) => {
    const dir = tempDir(t);
    const body = Buffer.from(Array.from({ length: 200_000 }, (_, i) => i % 249));
    const path = join(dir, 'a.mp3');
    writeFileSync(path, body);
    const files = new FinalFiles(4, undefined, 40);
    t.after(() => files.close());
    const before = await quietFds();
    const info = (await files.stat('a', path))!;
    const streaming = files.createReadStream('a', 0, body.length - 1, info.fileId)!;
    // Evicted in this process (forget), and in another (found unlinked once revalidateMs passed).
    unlinkSync(path);
    files.forget('a');
    assert.equal(await files.stat('a', path), undefined, 'a new request looks at the name again');
    const late = files.createReadStream('a', 0, body.length - 1, info.fileId);
    assert.ok(late, 'a request that found the file before still gets its descriptor');
    assert.deepEqual(await readAll(late), body);
    assert.deepEqual(await readAll(streaming), body, 'a stream running through it all ends whole');
    files.close();
    assert.equal(files.createReadStream('a', 0, 9, info.fileId), undefined, 'closed: gone');
    // The close is asynchronous.
    for (let i = 0; i < 400 && openFds() !== before; i++) await new Promise((r) => setTimeout(r, 5));
    assert.equal(openFds(), before, 'the descriptor is closed once its last stream ends');
  });

  it('looks at the name again after revalidateMs, and lets go of a removed file without a request', async (t) => {
    const dir = tempDir(t);
    const path = join(dir, 'a.mp3');
    writeFileSync(path, Buffer.alloc(1000, 1));
    const files = new FinalFiles(4, undefined, 40);
    t.after(() => files.close());
    const before = await quietFds();
    const lookedAt = performance.now();
    assert.equal((await files.stat('a', path))?.size, 1000);
    unlinkSync(path);
    const trusted = await files.stat('a', path);
    // Only within revalidateMs of the look (a loaded machine may take longer between the two).
    if (performance.now() - lookedAt < 40) assert.equal(trusted?.size, 1000, 'trusted within revalidateMs');
    // The pruner runs every revalidateMs; a loaded machine may run it late.
    for (let i = 0; i < 200 && openFds() !== before; i++) await sleep(10);
    assert.equal(openFds(), before, 'the timer closed the descriptor of the removed file');
    assert.equal(await files.stat('a', path), undefined);
    writeFileSync(path, Buffer.alloc(500, 2));
    assert.equal((await files.stat('a', path))?.size, 500);
    unlinkSync(path);
    writeFileSync(path, Buffer.alloc(700, 3));
    await sleep(60);
    assert.equal((await files.stat('a', path))?.size, 700, 'a replaced file is seen on the next look');
  });

  it('answers statNow only for a remembered file looked at within revalidateMs, as stat would', async (t) => {
    const dir = tempDir(t);
    const [a, b] = [join(dir, 'a.mp3'), join(dir, 'b.mp3')];
    writeFileSync(a, Buffer.alloc(1000, 1));
    writeFileSync(b, Buffer.alloc(10, 2));
    let now = 0;
    const files = new FinalFiles(2, undefined, 1000, () => now);
    t.after(() => files.close());
    assert.equal(files.statNow('a'), undefined, 'never opened: ask stat');
    const info = await files.stat('a', a);
    assert.equal(files.statNow('a'), info, 'the same answer, at once');
    now = 1000;
    assert.equal(files.statNow('a'), info, 'still trusted at revalidateMs');
    now = 1001;
    assert.equal(files.statNow('a'), undefined, 'due a look: stat decides');
    unlinkSync(a);
    assert.equal(await files.stat('a', a), undefined, 'stat looked, and the file is gone');
    assert.equal(files.statNow('a'), undefined, 'and statNow trusts nothing of it');
    writeFileSync(a, Buffer.alloc(700, 3));
    assert.equal((await files.stat('a', a))?.size, 700);
    assert.equal(files.statNow('a')?.size, 700);
    // A hit counts as a use: with room for two, the file statNow answered stays, the other goes.
    await files.stat('b', b);
    files.statNow('a');
    await files.stat('c', () => {
      writeFileSync(join(dir, 'c.mp3'), Buffer.alloc(5));
      return join(dir, 'c.mp3');
    });
    assert.equal(files.statNow('a')?.size, 700, 'recently used: kept');
    assert.equal(files.statNow('b'), undefined, 'least recently used: evicted');
    files.forget('a');
    assert.equal(files.statNow('a'), undefined, 'forgotten (a purge): ask stat');
  });

  it('evicts the least recently used, closing a descriptor only when its last reader ends', async (t) => {
    const dir = tempDir(t);
    for (const name of ['a', 'b', 'c']) writeFileSync(join(dir, `${name}.mp3`), Buffer.alloc(200_000, name));
    const files = new FinalFiles(2);
    t.after(() => files.close());
    const before = await quietFds();
    await files.stat('a', join(dir, 'a.mp3'));
    const reading = files.createReadStream('a', 0, 199_999)!;
    await files.stat('b', join(dir, 'b.mp3'));
    await files.stat('c', join(dir, 'c.mp3'));
    assert.equal(files.createReadStream('a', 0, 0), undefined, 'a was evicted');
    assert.equal(openFds(), before + 3, "a's descriptor stays open for its reader");
    assert.deepEqual(await readAll(reading), Buffer.alloc(200_000, 'a'));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(openFds(), before + 2);
    files.close();
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(openFds(), before);
  });

  it('errors, never ends short, when the file is shorter than promised', async (t) => {
    const dir = tempDir(t);
    writeFileSync(join(dir, 'a.mp3'), Buffer.alloc(100_000, 1));
    const files = new FinalFiles(2);
    t.after(() => files.close());
    await files.stat('a', join(dir, 'a.mp3'));
    truncateSync(join(dir, 'a.mp3'), 50_000);
    await assert.rejects(readAll(files.createReadStream('a', 0, 99_999)!), { code: 'RECGATE_STORAGE_ERROR' });
  });

  it('validates its size', () => {
    assert.throws(() => new FinalFiles(0), /maxOpenFiles/);
  });
});

describe('FinalFiles.read', () => {
  it('reads a small range of a remembered file at once; declines what it cannot read that way', async (t) => {
    const dir = tempDir(t);
    const body = Buffer.from(Array.from({ length: 200_000 }, (_, i) => i % 253));
    const path = join(dir, 'a.mp3');
    writeFileSync(path, body);
    const files = new FinalFiles(4);
    t.after(() => files.close());
    assert.equal(files.read('a', 0, 9), undefined, 'nothing remembered yet');
    const info = (await files.stat('a', path))!;
    assert.deepEqual(files.read('a', 1000, 66_535), body.subarray(1000, 66_536));
    assert.deepEqual(files.read('a', 5, 5, info.fileId), body.subarray(5, 6));
    assert.equal(files.read('a', 0, 65_536), undefined, 'more than one chunk is streamed');
    assert.equal(files.read('a', 0, 9, '1:2'), undefined, 'another file than the one asked for');
    // A removed file that a request found a moment before is still read, by its id.
    unlinkSync(path);
    files.forget('a');
    assert.equal(files.read('a', 0, 9), undefined);
    assert.deepEqual(files.read('a', 0, 9, info.fileId), body.subarray(0, 10));
  });

  it('fails a read past the end of a file shorter than its range', async (t) => {
    const dir = tempDir(t);
    const path = join(dir, 'a.mp3');
    writeFileSync(path, Buffer.alloc(1000, 3));
    const files = new FinalFiles(4);
    t.after(() => files.close());
    await files.stat('a', path);
    assert.throws(() => files.read('a', 900, 1099), { code: 'RECGATE_STORAGE_ERROR' });
  });

  it('turns synchronous reads off for a while after several slow ones, not after one', async (t) => {
    const dir = tempDir(t);
    const path = join(dir, 'a.mp3');
    writeFileSync(path, Buffer.alloc(1000, 4));
    // The clock moves by `step` each time it is asked: a slow read is one during which it moves a lot.
    let now = 0;
    let step = 0;
    const files = new FinalFiles(4, undefined, 1_000_000, () => {
      now += step;
      return now;
    });
    t.after(() => files.close());
    await files.stat('a', path);
    const read = () => files.read('a', 0, 99) !== undefined;
    const slowRead = () => {
      step = 5;
      const ok = read();
      step = 0;
      return ok;
    };
    assert.ok(slowRead(), 'a slow read is answered');
    for (let i = 0; i < 40; i++) assert.ok(read());
    assert.ok(slowRead() && slowRead(), 'one slow read, forgotten after fast ones, then two more');
    assert.ok(slowRead(), 'the third slow one close together is still answered…');
    assert.equal(read(), false, '…and turns synchronous reads off');
    now += 9_000;
    assert.equal(read(), false, 'still off within the back-off');
    now += 2_000;
    assert.ok(read(), 'on again after it');
  });
});
