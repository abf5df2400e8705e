// The image's HEALTHCHECK: GET /healthz of the app this container runs, exit 0 when it answers 200.
// The entry point wrote the role (scheduler or worker) to WERKPILOT_ROLE_FILE; a container that runs
// something else (the CLI, a shell) has no HTTP to check and counts as healthy.
import { readFileSync } from 'node:fs';

const roleFile = process.env.WERKPILOT_ROLE_FILE ?? '/tmp/werkpilot-role';
let role = '';
try {
  role = readFileSync(roleFile, 'utf8').trim();
} catch {
  // no role file: not an app container
}

const port = role === 'scheduler' ? process.env.PORT || '3001' : role === 'worker' ? process.env.WORKER_HTTP_PORT || '3002' : undefined;

if (port === undefined) {
  process.exit(0);
}
if (port === '0') {
  // WORKER_HTTP_PORT=0 turns the worker's HTTP off; there is nothing to ask.
  console.log('healthcheck: worker HTTP is off (WORKER_HTTP_PORT=0)');
  process.exit(0);
}

try {
  const res = await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(4000) });
  if (!res.ok) {
    console.log(`healthcheck: ${role} /healthz answered ${res.status}`);
    process.exit(1);
  }
  process.exit(0);
} catch (err) {
  console.log(`healthcheck: ${role} /healthz on port ${port} did not answer: ${err instanceof Error ? err.message : err}`);
  process.exit(1);
}
