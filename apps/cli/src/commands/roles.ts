import type { Command } from 'commander';

interface Role {
  description: string;
  /** Loaded on demand: the operator commands never pay for BullMQ, Express and Bull Board. */
  run(): Promise<void>;
}

const ROLES: Record<string, Role> = {
  scheduler: {
    description: 'run a scheduler in this process: planning (when it holds the leader lease) and HTTP on PORT (3001)',
    run: async () => (await import('@werkpilot/scheduler')).runScheduler(),
  },
  worker: {
    description: 'run a worker in this process: executes agent runs; /metrics and /healthz on WORKER_HTTP_PORT (3002)',
    run: async () => (await import('@werkpilot/worker')).runWorker(),
  },
  start: {
    description: 'the whole system on one machine: a Redis (found or started), a scheduler and a worker as child processes',
    run: async () => (await import('../start-supervisor.js')).runStart(),
  },
};

/**
 * The process roles of the one `werkpilot` binary. Each runs in the binary's own process, so the
 * PID a supervisor (systemd, Docker, pm2, Kubernetes) starts is the PID it signals: SIGTERM runs the
 * six shutdown steps and exits 0. A startup problem prints one line (the registry: one list) and
 * exits 2 (bad configuration or agents) or 1.
 */
export function registerRoles(program: Command): void {
  program.commandsGroup('Processes:');
  for (const [name, role] of Object.entries(ROLES)) {
    program
      .command(name)
      .description(role.description)
      .action(async () => {
        const { runProcess } = await import('@werkpilot/shared');
        // Resolves as soon as the role started; the role's own handles keep the process alive
        // until its shutdown exits.
        runProcess(`werkpilot ${name}`, role.run);
      });
  }
  program.commandsGroup('Operating a cluster (over the HTTP API):');
}
