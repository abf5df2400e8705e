import type { Command } from 'commander';
import type { ShardsView } from '../api-types.js';
import type { CliIo } from '../cli-io.js';
import { withContext } from '../command-context.js';
import { renderTable } from '../table.js';

type ShardRow = ShardsView['shards'][number] & { isServed: boolean };

export function registerShards(program: Command, io: CliIo): void {
  program
    .command('shards')
    .description('where the agents live (WERKPILOT_SHARDS): each shard, its key prefix and slot, its dependency components and expected runs per hour')
    .action(
      withContext(io, async (ctx) => {
        const view = await ctx.api.get<ShardsView>('/api/shards');
        if (ctx.isJson) return ctx.printJson(view);
        const rows: ShardRow[] = view.shards.map((shard) => ({ ...shard, isServed: shard.index === view.served }));
        ctx.print(
          renderTable(
            [
              { header: 'SHARD', value: (s: ShardRow) => `${s.index}${s.isServed ? '*' : ''}`, align: 'right' },
              { header: 'PREFIX', value: (s) => s.prefix },
              { header: 'SLOT', value: (s) => String(s.slot), align: 'right' },
              { header: 'RUNS/H', value: (s) => String(s.expectedRunsPerHour), align: 'right' },
              { header: 'AGENTS', value: (s) => String(s.agents.length), align: 'right' },
              { header: 'COMPONENTS', value: (s) => s.components.map((c) => c.join(' ')).join(' | ') || '(none)' },
            ],
            rows,
          ),
        );
        ctx.print(`\n* the shard this scheduler serves (${view.count} shard${view.count === 1 ? '' : 's'} in all)`);
      }),
    );
}
