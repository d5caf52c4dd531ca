/** Entry of the load generator's own process: runs specs sent over IPC and replies with their results. */
import { type LoadSpec, runLoad } from './loadgen.js';

process.on('message', (msg: { id: number; spec: LoadSpec }) => {
  runLoad(msg.spec).then(
    (result) => process.send!({ id: msg.id, result }),
    (err: unknown) => process.send!({ id: msg.id, error: err instanceof Error ? err.message : String(err) }),
  );
});
process.send!({ ready: true });
