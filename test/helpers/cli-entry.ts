// Runs the CLI from source through tsx (started with `--import tsx`); cluster workers re-run this file with the
// same --import. Tests start recgate through test/helpers/recgate-command.ts, which runs the build instead
// under `npm run test:unit`.
import { main } from '../../src/cli/main.js';

main(process.argv).catch((err) => {
  process.stderr.write(`recgate: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
