import { runProcess } from '@werkpilot/shared';
import { runWorker } from './worker-process.js';

runProcess('werkpilot worker', runWorker);
