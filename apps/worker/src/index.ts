/** The worker role, run by the `werkpilot worker` binary (apps/cli). */
export { runWorker } from './worker-process.js';
