import { runProcess } from '@werkpilot/shared';
import { runScheduler } from './scheduler-process.js';

runProcess('werkpilot scheduler', runScheduler);
