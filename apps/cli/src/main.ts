import { processIo } from './cli-io.js';
import { runCli } from './program.js';

/** `pnpm werkpilot <command>` and the `werkpilot` bin. */
process.exitCode = await runCli(process.argv.slice(2), processIo());
