/** The scheduler role, run by the `werkpilot scheduler` binary (apps/cli). */
export { runScheduler } from './scheduler-process.js';
