import type { Command } from 'commander';
import type { CliIo } from '../cli-io.js';
import { withContext } from '../command-context.js';

/** `enable <agent>`, `disable <agent>`, `circuit reset <agent>`: the operator actions on one agent. */
export function registerAgentActions(program: Command, io: CliIo): void {
  for (const action of ['enable', 'disable'] as const) {
    program
      .command(action)
      .argument('<agent>', 'agent name')
      .description(action === 'enable' ? 'enable an agent again' : 'disable an agent: its ticks and triggers are skipped with reason "disabled"')
      .action(
        withContext(io, async (ctx, agent: string) => {
          const answer = await ctx.api.post<unknown>(`/api/agents/${encodeURIComponent(agent)}/${action}`);
          if (ctx.isJson) return ctx.printJson(answer);
          ctx.print(`${action}d ${agent}`);
        }),
      );
  }

  const circuit = program.command('circuit').description('circuit breaker actions');
  circuit
    .command('reset')
    .argument('<agent>', 'agent name')
    .description("close an agent's circuit and clear its restart count")
    .action(
      withContext(io, async (ctx, agent: string) => {
        const answer = await ctx.api.post<{ circuit?: unknown }>(`/api/agents/${encodeURIComponent(agent)}/circuit/reset`);
        if (ctx.isJson) return ctx.printJson(answer);
        ctx.print(`reset the circuit of ${agent}`);
      }),
    );
}
