// A `--workers` primary (runPrimary of src/cli/cluster.ts) that sends to workers which have died but whose death
// it has not yet noticed: test/cli/cluster.test.ts runs it. Each time a worker listens, the primary kills it with
// SIGKILL, blocks its event loop until /proc shows the worker a zombie (dead, its end of the IPC channel closed,
// not yet reaped) and calls hurry(), which writes to that channel; the primary then restarts the worker. After
// ROUNDS rounds it stops, logs `survived: true` and exits 0, if it is still up.
//
// Whether such a write fails at once (EPIPE, which without a callback Node emits as an 'error' event on the
// Worker) or is queued and reported later varied from round to round here, so the fixture makes many rounds.
//
// JavaScript, as serve-entry.mjs: it imports the dist/ that test/run.ts built under RECGATE_TEST_BUILT=1, else
// the sources (its parent starts it with `--import tsx`). Cluster workers re-run this file.
import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

const ROUNDS = 12;

if (cluster.isWorker) {
  createServer().listen(0, '127.0.0.1');
} else {
  const { runPrimary } = await import(
    process.env.RECGATE_TEST_BUILT === '1' ? '../../dist/cli/cluster.js' : '../../src/cli/cluster.ts'
  );
  const { pino } = await import('pino');
  const logger = pino({ level: 'debug' });
  const sleep = new Int32Array(new SharedArrayBuffer(4));
  const isZombie = (pid) => {
    try {
      // The state is the field after the command's closing parenthesis.
      return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.startsWith('Z') === true;
    } catch {
      return false;
    }
  };
  const primary = runPrimary(
    { workers: 1, host: '127.0.0.1' },
    { logger, onListening() {} },
    { restartDelayMs: 0, maxRestartDelayMs: 0, maxCrashes: 1000, crashWindowMs: 60_000 },
  );
  let rounds = 0;
  cluster.on('listening', (worker) => {
    if (rounds === ROUNDS) return;
    process.kill(worker.process.pid, 'SIGKILL');
    const deadline = Date.now() + 20_000;
    while (!isZombie(worker.process.pid)) {
      if (Date.now() > deadline) throw new Error(`worker ${worker.process.pid} did not die`);
      Atomics.wait(sleep, 0, 0, 5);
    }
    primary.hurry();
    // No process.exit(): a failed write's callback may come after the stop, and the loop runs it first.
    if (++rounds === ROUNDS) primary.stop().then(() => logger.info({ survived: true, rounds }, 'stopped'));
  });
  primary.gaveUp.catch((err) => {
    process.stderr.write(`gave up: ${err.message}\n`);
    process.exit(2);
  });
}
