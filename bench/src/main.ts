/**
 * `pnpm bench [--quick] [--only a,b] [--out file]`: every scenario against its own fresh Redis,
 * ours beside raw BullMQ measured in the same run; prints a table and writes
 * `bench/results/latest.json`. See bench/README.md for what each row means.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { openBenchRedis, describeServer } from './bench-redis.js';
import { toRow, type ResultRow } from './measurement.js';
import { describeCheckout, describeMachine, writeResults, type ResultsFile } from './results-file.js';
import { ScenarioSkippedError, type Scenario } from './scenario.js';
import { SCENARIOS } from './scenario-list.js';
import { formatTable } from './table.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

const USAGE = `usage: pnpm bench [--quick] [--only ${SCENARIOS.map((s) => s.name).join(',')}] [--out bench/results/latest.json]`;

function parseCommandLine(argv: string[]) {
  return parseArgs({
    args: argv.filter((a) => a !== '--'),
    options: { quick: { type: 'boolean', default: false }, only: { type: 'string' }, out: { type: 'string' }, help: { type: 'boolean', default: false } },
  }).values;
}

async function main(): Promise<number> {
  let args: ReturnType<typeof parseCommandLine>;
  try {
    args = parseCommandLine(process.argv.slice(2));
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (args.help) {
    console.log(USAGE);
    return 0;
  }
  const selected = selectScenarios(args.only);
  if (typeof selected === 'string') {
    console.error(`${selected}\n${USAGE}`);
    return 2;
  }
  const quick = args.quick ?? false;
  const out = path.resolve(args.out ?? path.join(REPO_ROOT, 'bench/results/latest.json'));
  const progress = (message: string) => process.stderr.write(`bench: ${message}\n`);

  const checkout = describeCheckout(REPO_ROOT);
  const machine = describeMachine();
  const rows: ResultRow[] = [];
  const errors: ResultsFile['errors'] = [];
  const skipped: ResultsFile['skipped'] = [];
  let server: ResultsFile['redis'] = { version: 'unknown', hz: NaN };
  const startedAt = Date.now();

  for (const scenario of selected) {
    const redis = await openBenchRedis();
    try {
      if (Number.isNaN(server.hz)) server = await describeServer(redis.url);
      progress(`${scenario.name}: ${scenario.title}`);
      const measurements = await scenario.run({ quick, redis, progress });
      rows.push(...measurements.map((m) => toRow(scenario.name, m)));
    } catch (err) {
      if (err instanceof ScenarioSkippedError) {
        progress(`${scenario.name} skipped: ${err.message}`);
        skipped.push({ scenario: scenario.name, reason: err.message });
        continue;
      }
      const message = (err as Error).stack ?? String(err);
      progress(`${scenario.name} failed: ${message}`);
      errors.push({ scenario: scenario.name, error: (err as Error).message ?? String(err) });
    } finally {
      await redis.close();
    }
  }

  const results: ResultsFile = {
    ...checkout,
    date: new Date(startedAt).toISOString(),
    node: process.version,
    redis: server,
    mode: quick ? 'quick' : 'full',
    machine,
    results: rows,
    errors,
    skipped,
  };
  writeResults(out, results);
  console.log(
    `werkpilot bench (${results.mode}) — commit ${checkout.commit.slice(0, 10)}${checkout.dirty ? ' (dirty tree)' : ''}, node ${results.node}, redis ${server.version} (hz ${server.hz}), ${machine.cpus} CPUs, load ${machine.loadAverageAtStart.join(' ')}`,
  );
  console.log(formatTable(rows));
  console.log(`\n${rows.length} rows in ${((Date.now() - startedAt) / 1000).toFixed(1)} s; written to ${path.relative(process.cwd(), out) || out}`);
  for (const s of skipped) console.log(`SKIPPED ${s.scenario}: ${s.reason}`);
  for (const e of errors) console.log(`FAILED ${e.scenario}: ${e.error}`);
  return errors.length > 0 ? 1 : 0;
}

function selectScenarios(only: string | undefined): readonly Scenario[] | string {
  if (!only) return SCENARIOS;
  const names = only
    .split(',')
    .map((n) => n.trim())
    .filter(Boolean);
  const unknown = names.filter((n) => !SCENARIOS.some((s) => s.name === n));
  if (unknown.length > 0) return `--only: unknown scenario ${unknown.map((n) => JSON.stringify(n)).join(', ')}`;
  return SCENARIOS.filter((s) => names.includes(s.name));
}

process.exitCode = await main();
