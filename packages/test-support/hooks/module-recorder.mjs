// Records the URL of every module the process loads through the ES module loader into the file
// named by WERKPILOT_TEST_MODULE_LOG, one per line. A test starts a process with
// NODE_OPTIONS=--import=<this file> to see what it loaded (e.g. that tracing off loads no SDK).
import { register } from 'node:module';

register('./module-recorder-hooks.mjs', import.meta.url, { data: { file: process.env.WERKPILOT_TEST_MODULE_LOG } });
