// Runs the CLI from source, so tests need no build; cluster workers re-run this file with the same --import.
import { main } from '../../src/cli/main.js';

main(process.argv).catch((err) => {
  process.stderr.write(`recgate: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
