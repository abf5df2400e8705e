import { Option, type Command } from 'commander';
import type { AgentView, BootView } from '../api-types.js';
import { CliError } from '../cli-error.js';
import type { CliIo } from '../cli-io.js';
import { withContext, type CommandContext } from '../command-context.js';
import { positiveInt } from './run.js';

const BOOT_POLL_MS = 250;
const DEFAULT_BOOT_TIMEOUT_MS = 90_000;

/** `enable <agent>`, `disable <agent>`, `circuit reset <agent>`, `boot <agent>`: the operator actions on one agent. */
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

  program
    .command('boot')
    .argument('<agent>', 'agent name')
    .description("run an agent's boot check again now (its healthCheck, on a worker); dependents it blocked unblock once it passes. Exit 0 if it passed")
    .addOption(new Option('--timeout <ms>', `give up waiting after this many milliseconds (default ${DEFAULT_BOOT_TIMEOUT_MS})`).argParser(positiveInt('--timeout')))
    .action(
      withContext(io, async (ctx, agent: string, options: { timeout?: number }) => {
        const path = `/api/agents/${encodeURIComponent(agent)}`;
        const { requestSeq } = await ctx.api.post<{ requestSeq: number }>(`${path}/boot`);
        const boot = await waitForBootAnswer(ctx, path, requestSeq, options.timeout ?? DEFAULT_BOOT_TIMEOUT_MS);
        if (ctx.isJson) ctx.printJson({ agent, boot });
        else ctx.print(`${agent}: boot ${boot.status}${boot.reason ? `: ${boot.reason}` : ''}`);
        if (boot.status !== 'ok') throw new CliError(`${agent} did not pass its boot check: ${boot.status}${boot.reason ? ` (${boot.reason})` : ''}`);
      }),
    );
}

/** Polls the agent until its boot state answers request `requestSeq` (the leader checked it, or found it blocked). */
async function waitForBootAnswer(ctx: CommandContext, path: string, requestSeq: number, timeoutMs: number): Promise<BootView> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { boot } = await ctx.api.get<AgentView>(path);
    if (boot && (boot.requestSeq ?? 0) >= requestSeq) return boot;
    if (ctx.io.signal.aborted) throw new CliError('stopped waiting; the leader still checks the agent');
    if (Date.now() > deadline) {
      throw new CliError(`no answer within ${timeoutMs} ms: is a scheduler leading and a worker running? (werkpilot status)`);
    }
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, BOOT_POLL_MS);
      ctx.io.signal.addEventListener(
        'abort',
        () => {
          clearTimeout(timer);
          resolve();
        },
        { once: true },
      );
    });
  }
}
