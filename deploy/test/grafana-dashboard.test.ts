import { freePort } from '@werkpilot/shared';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentSource, startApp, stopApps, uniquePrefix, useTestRedis, waitFor, writeAgentsDir, type AppProcess } from '@werkpilot/test-support';
import { exactMatchersIn, exportedNames, metricNamesIn } from './promql-names.js';
import { DEPLOY_DIR, REPO_ROOT, hasTool, run, warnMissing } from './tools.js';

/**
 * The Grafana dashboard and the alert rules must not silently rot: every metric name their queries
 * read must be one that a live scheduler or worker really exports on /metrics (scraped here with
 * Prometheus's Accept header from real processes on a real Redis) — with either setting of
 * METRICS_AGENT_HISTOGRAMS. With it off, only the panels that say they need it may read a name no
 * process exports (the per-agent histogram); no alert rule may.
 */

const redis = useTestRedis();
const dashboard = JSON.parse(readFileSync(path.join(DEPLOY_DIR, 'grafana', 'dashboards', 'werkpilot.json'), 'utf8')) as Dashboard;
const alertsYml = readFileSync(path.join(DEPLOY_DIR, 'alerts.yml'), 'utf8');
/** Series Prometheus itself adds to every scrape, not exported by our processes. */
const SYNTHETIC = new Set(['up', 'scrape_duration_seconds', 'scrape_samples_scraped']);
const PROMETHEUS_ACCEPT = 'application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1';

interface Panel {
  title?: string;
  description?: string;
  type: string;
  targets?: { expr?: string }[];
  panels?: Panel[];
}
interface Dashboard {
  uid: string;
  panels: Panel[];
  templating: { list: { name: string; type: string; query?: string | { query?: string }; current?: { value?: string } }[] };
}

function allPanels(panels: Panel[]): Panel[] {
  return panels.flatMap((p) => [p, ...allPanels(p.panels ?? [])]);
}

/** Panels that read the per-agent histograms say so in their description, and are empty without them. */
const needsAgentHistograms = (p: Panel) => (p.description ?? '').includes('METRICS_AGENT_HISTOGRAMS=true');

function dashboardQueries({ agentHistograms = true } = {}): { where: string; expr: string }[] {
  const panels = allPanels(dashboard.panels).filter((p) => agentHistograms || !needsAgentHistograms(p));
  const queries = panels.flatMap((p) => (p.targets ?? []).filter((t) => t.expr).map((t) => ({ where: `panel "${p.title}"`, expr: t.expr! })));
  for (const v of dashboard.templating.list) {
    if (v.type !== 'query') continue;
    const expr = typeof v.query === 'string' ? v.query : v.query?.query;
    if (expr) queries.push({ where: `variable $${v.name}`, expr });
  }
  return queries;
}

function alertQueries(): { where: string; expr: string }[] {
  return [...alertsYml.matchAll(/- alert: (\w+)\s*\n(?:\s*#.*\n)*\s*expr: (.+)/g)].map((m) => ({ where: `alert ${m[1]}`, expr: m[2]!.trim() }));
}

describe('PromQL name extraction', () => {
  it('finds the metric names and nothing else', () => {
    expect(metricNamesIn('histogram_quantile(0.95, max by (agent, le) (rate(a_bucket{agent=~"$agent"}[$__rate_interval])))')).toEqual(['a_bucket']);
    expect(metricNamesIn('(max(x_is_leader) or vector(0)) < 1')).toEqual(['x_is_leader']);
    expect(metricNamesIn('count(max by (agent) (c{state="open"}) == 1) or vector(0)')).toEqual(['c']);
    expect(metricNamesIn('max(delta(d[15m])) > 0 and on() e offset 5m')).toEqual(['d', 'e']);
    expect(metricNamesIn('label_values(werkpilot_agent_priority, agent)')).toEqual(['werkpilot_agent_priority']);
  });
});

describe('dashboard structure', () => {
  it('shows what operators asked for', () => {
    const titles = allPanels(dashboard.panels)
      .map((p) => p.title ?? '')
      .join('\n');
    for (const wanted of [
      /runs by outcome/i,
      /p50 \/ p95 \/ p99 per agent/i,
      /p50 \/ p95 \/ p99 by priority/i,
      /queue depth by priority/i,
      /dead-letter queue/i,
      /circuit/i,
      /health/i,
      /live workers/i,
      /memory/i,
    ]) {
      expect(titles).toMatch(wanted);
    }
    const quantiles = dashboardQueries().filter((q) => q.expr.includes('histogram_quantile'));
    expect(quantiles.map((q) => /histogram_quantile\(([\d.]+)/.exec(q.expr)?.[1])).toEqual(['0.5', '0.95', '0.99', '0.5', '0.95', '0.99']);
  });

  it('reads the per-agent histograms only in panels that say they need METRICS_AGENT_HISTOGRAMS=true, and never in an alert', () => {
    const readers = allPanels(dashboard.panels).filter((p) => (p.targets ?? []).some((t) => t.expr?.includes('werkpilot_agent_run_duration_seconds')));
    expect(readers.map((p) => p.title)).toEqual(['Run duration p50 / p95 / p99 per agent']);
    expect(readers.every(needsAgentHistograms)).toBe(true);
    expect(dashboardQueries({ agentHistograms: false }).some((q) => q.expr.includes('werkpilot_priority_run_duration_seconds_bucket'))).toBe(true);
    expect(alertQueries().filter((q) => q.expr.includes('run_duration'))).toEqual([]);
  });

  it('uses the provisioned datasource and is loaded from the directory compose mounts', () => {
    const datasources = readFileSync(path.join(DEPLOY_DIR, 'grafana', 'provisioning', 'datasources', 'prometheus.yml'), 'utf8');
    const uid = /uid: (\S+)/.exec(datasources)?.[1];
    expect(dashboard.templating.list.find((v) => v.type === 'datasource')?.current?.value).toBe(uid);
    expect(datasources).toMatch(/url: http:\/\/prometheus:9090/);
    const provider = readFileSync(path.join(DEPLOY_DIR, 'grafana', 'provisioning', 'dashboards', 'werkpilot.yml'), 'utf8');
    const dir = /path: (\S+)/.exec(provider)?.[1];
    expect(readFileSync(path.join(REPO_ROOT, 'docker-compose.yml'), 'utf8')).toContain(`./deploy/grafana/dashboards:${dir}:ro`);
  });

  it.skipIf(!hasTool('promtool'))('has queries that are valid PromQL (checked by promtool as recording rules)', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'werkpilot-dashboard-'));
    try {
      // Panel queries only: a variable's label_values() is Grafana's, not PromQL.
      const rules = dashboardQueries()
        .filter((q) => q.where.startsWith('panel'))
        .map((q, i) => ({
          record: `dashboard:query_${i}`,
          expr: q.expr
            .replaceAll('$__rate_interval', '1m')
            .replaceAll('$__range', '1h')
            .replace(/\$\{?\w+\}?/g, '.*'),
        }));
      const file = path.join(dir, 'rules.json');
      writeFileSync(file, JSON.stringify({ groups: [{ name: 'dashboard', rules }] }));
      const result = run('promtool', ['check', 'rules', file]);
      expect(result.stdout + result.stderr, result.stdout + result.stderr).toMatch(new RegExp(`SUCCESS: ${rules.length} rules found`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('metric names against a live scrape, with either setting of METRICS_AGENT_HISTOGRAMS', () => {
  const schedulers: { app: AppProcess; port: number; agentHistograms: boolean }[] = [];
  let worker: AppProcess;
  let workerPort: number;

  beforeAll(async () => {
    if (!hasTool('promtool')) warnMissing('promtool', 'apt-get install prometheus');
    workerPort = await freePort();
    const agentsDir = writeAgentsDir({ 'ticker.ts': agentSource({ name: 'ticker', schedule: { cron: '* * * * * *' } }, 'return { ok: true };') });
    const env = { REDIS_URL: redis.url, WERKPILOT_PREFIX: uniquePrefix(), WERKPILOT_AGENTS: agentsDir, LOG_LEVEL: 'warn' };
    // Two scheduler replicas of one cluster, one per setting.
    for (const agentHistograms of [true, false]) {
      const port = await freePort();
      schedulers.push({ app: startApp('scheduler', { ...env, PORT: String(port), METRICS_AGENT_HISTOGRAMS: String(agentHistograms) }), port, agentHistograms });
    }
    worker = startApp('worker', { ...env, WORKER_HTTP_PORT: String(workerPort) });
  }, 60_000);

  afterAll(async () => {
    await stopApps([worker, ...schedulers.map((s) => s.app)].filter(Boolean));
  }, 60_000);

  /** How long a scrape waits for a process to come up and run a tick; a test that scrapes twice waits for both. */
  const SCRAPE_TIMEOUT_MS = 40_000;

  /** Scrapes like Prometheus does, once the process has run at least one agent run. */
  async function scrape(port: number, what: string, app: AppProcess): Promise<string> {
    return waitFor(
      async () => {
        const res = await fetch(`http://127.0.0.1:${port}/metrics`, { headers: { accept: PROMETHEUS_ACCEPT } });
        if (!res.ok || !/text\/plain|openmetrics/.test(res.headers.get('content-type') ?? '')) return undefined;
        const text = await res.text();
        return /_runs_total\{[^}]*agent="ticker"[^}]*\} [1-9]/.test(text) ? text : undefined;
      },
      { timeoutMs: SCRAPE_TIMEOUT_MS, intervalMs: 250, what: () => `${what} /metrics in Prometheus format with a ticker run; output:\n${app.output().slice(-1500)}` },
    );
  }

  const expositions = new Map<boolean, string>();

  for (const agentHistograms of [true, false]) {
    it(
      `exports every metric the dashboard and the alert rules read (METRICS_AGENT_HISTOGRAMS=${agentHistograms})`,
      async () => {
        const scheduler = schedulers.find((s) => s.agentHistograms === agentHistograms)!;
        const exposition = `${await scrape(scheduler.port, 'scheduler', scheduler.app)}\n${await scrape(workerPort, 'worker', worker)}`;
        expositions.set(agentHistograms, exposition);
        const exported = exportedNames(exposition);
        expect(exported.has('werkpilot_agent_run_duration_seconds_bucket')).toBe(agentHistograms);
        const queries = [...dashboardQueries({ agentHistograms }), ...alertQueries()];
        expect(alertQueries().length).toBeGreaterThanOrEqual(4);
        const used = new Set(queries.flatMap((q) => metricNamesIn(q.expr)));
        expect(used.size).toBeGreaterThanOrEqual(10);
        const missing = queries.flatMap((q) =>
          metricNamesIn(q.expr)
            .filter((n) => !exported.has(n) && !SYNTHETIC.has(n))
            .map((n) => `${n} (${q.where})`),
        );
        expect(missing, `metric names no process exports; exported werkpilot_*: ${[...exported].filter((n) => n.startsWith('werkpilot_')).join(', ')}`).toEqual([]);
      },
      2 * SCRAPE_TIMEOUT_MS + 10_000,
    );

    it(`exports the label values the queries select exactly (state="open", queue="agents", ...) (METRICS_AGENT_HISTOGRAMS=${agentHistograms})`, () => {
      const exposition = expositions.get(agentHistograms);
      expect(exposition, 'needs the scrape of the previous test').toBeDefined();
      const matchers = [...dashboardQueries({ agentHistograms }), ...alertQueries()].flatMap((q) => exactMatchersIn(q.expr).map((m) => ({ ...m, where: q.where })));
      expect(matchers.length).toBeGreaterThanOrEqual(5);
      const unmatched = matchers
        .filter((m) => !SYNTHETIC.has(m.name))
        .filter((m) => !new RegExp(`^${m.name}\\{[^}]*\\b${m.label}="${m.value.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}"`, 'm').test(exposition!))
        .map((m) => `${m.name}{${m.label}="${m.value}"} (${m.where})`);
      expect(unmatched, 'selectors no exported series matches').toEqual([]);
    });
  }
});
