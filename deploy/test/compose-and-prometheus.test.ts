import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEPLOY_DIR, REPO_ROOT, composeCommand, hasTool, run, warnMissing } from './tools.js';

/**
 * The compose stack cannot start here (no Docker engine), so it is checked by construction:
 * Compose itself validates and normalises the file, promtool validates the Prometheus config and
 * the alert rules and runs their unit tests (deploy/test/alerts.promtest.yml).
 */

const compose = composeCommand();
const hasPromtool = hasTool('promtool');
if (!compose) warnMissing('docker-compose', 'apt-get install docker-compose');
if (!hasPromtool) warnMissing('promtool', 'apt-get install prometheus');

/** The normalised `config` output, split into one text block per service. */
function serviceBlocks(configYaml: string): Map<string, string> {
  const lines = configYaml.split('\n');
  const start = lines.indexOf('services:');
  const blocks = new Map<string, string>();
  let current: string | undefined;
  for (const line of lines.slice(start + 1)) {
    if (/^\S/.test(line)) break; // the next top-level key
    const name = /^ {2}([\w-]+):\s*$/.exec(line)?.[1];
    if (name) {
      current = name;
      blocks.set(name, '');
    } else if (current) {
      blocks.set(current, `${blocks.get(current)}${line}\n`);
    }
  }
  return blocks;
}

describe.skipIf(!compose)('docker-compose.yml', () => {
  const config = () => {
    const result = run(compose![0]!, [...compose!.slice(1), '-f', 'docker-compose.yml', '--profile', 'cli', 'config']);
    expect(result.stderr.replace(/^.*WARN.*$/gm, '').trim(), result.stderr).toBe('');
    expect(result.status).toBe(0);
    return serviceBlocks(result.stdout);
  };

  it('is a valid compose file (`config -q`)', () => {
    const result = run(compose![0]!, [...compose!.slice(1), '-f', 'docker-compose.yml', 'config', '-q']);
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
  });

  it('has redis, scheduler, worker, prometheus and grafana, plus the cli tool service', () => {
    expect([...config().keys()].sort()).toEqual(['cli', 'grafana', 'prometheus', 'redis', 'scheduler', 'worker']);
  });

  it('runs redis 7 with AOF, hz 100, a volume and a healthcheck', () => {
    const redis = config().get('redis')!;
    expect(redis).toMatch(/image: redis:7/);
    expect(redis).toMatch(/--appendonly\s*\n\s*- '?"?yes/);
    expect(redis).toMatch(/--hz\s*\n\s*- '?"?100/);
    expect(redis).toMatch(/redis-data:\/data|source: redis-data/);
    expect(redis).toMatch(/healthcheck:[\s\S]*redis-cli[\s\S]*ping/);
  });

  it('publishes the scheduler on 3001 once redis is healthy', () => {
    const scheduler = config().get('scheduler')!;
    expect(scheduler).toMatch(/command:\s*\n\s*- scheduler/);
    expect(scheduler).toMatch(/redis:\s*\n\s*condition: service_healthy/);
    expect(scheduler).toMatch(/published: "?'?3001|3001:3001/);
    expect(scheduler).toMatch(/REDIS_URL: redis:\/\/redis:6379/);
  });

  it('lets workers scale: no container name, no host port, a stop grace longer than SHUTDOWN_GRACE_MS', () => {
    const worker = config().get('worker')!;
    expect(worker).toMatch(/command:\s*\n\s*- worker/);
    expect(worker).not.toMatch(/container_name:/);
    expect(worker).not.toMatch(/^\s+ports:/m);
    expect(worker).toMatch(/redis:\s*\n\s*condition: service_healthy/);
    const graceMs = Number(/SHUTDOWN_GRACE_MS: '?"?(\d+)/.exec(worker)?.[1]);
    const stopGrace = /stop_grace_period: (\d+)(m?s)/.exec(worker);
    expect(stopGrace, 'worker stop_grace_period').not.toBeNull();
    const stopGraceMs = Number(stopGrace![1]) * (stopGrace![2] === 's' ? 1000 : 1);
    expect(graceMs).toBe(30_000);
    expect(stopGraceMs).toBeGreaterThan(graceMs);
    expect(worker).toMatch(/WORKER_HTTP_PORT: '?"?3002/);
  });

  it('builds the image once, in the scheduler service; worker and cli run that tag and never pull it', () => {
    const blocks = config();
    const withBuild = [...blocks].filter(([, block]) => /^ {4}build:/m.test(block)).map(([name]) => name);
    expect(withBuild).toEqual(['scheduler']);
    const image = /^ {4}image: (\S+)/m.exec(blocks.get('scheduler')!)?.[1];
    expect(image).toBe('werkpilot:latest');
    for (const service of ['worker', 'cli']) {
      expect(blocks.get(service)).toMatch(new RegExp(`^ {4}image: ${image}$`, 'm'));
      expect(blocks.get(service)).toMatch(/^ {4}pull_policy: never$/m);
    }
  });

  it('keeps WORKER_REPLICAS workers across plain `up`s', () => {
    const result = run(compose![0]!, [...compose!.slice(1), '-f', 'docker-compose.yml', 'config'], { env: { WORKER_REPLICAS: '3' } });
    expect(result.status).toBe(0);
    expect(serviceBlocks(result.stdout).get('worker')).toMatch(/replicas: 3/);
  });

  it('mounts the agents directory as a bind that must exist, so a mistyped WERKPILOT_AGENTS_DIR fails `up` naming the host path', () => {
    const result = run(compose![0]!, [...compose!.slice(1), '-f', 'docker-compose.yml', 'config'], { env: { WERKPILOT_AGENTS_DIR: './my-agnets' } });
    expect(result.status).toBe(0);
    for (const service of ['scheduler', 'worker']) {
      const block = serviceBlocks(result.stdout).get(service)!;
      expect(block).toMatch(/type: bind/);
      expect(block).toMatch(new RegExp(`source: ${REPO_ROOT}/my-agnets`));
      expect(block).toMatch(/target: \/app\/agents/);
      // The short syntax (and create_host_path: true) would create an empty directory instead.
      expect(block).not.toMatch(/create_host_path: true/);
    }
  });

  it('mounts the Prometheus config and alert rules, and provisions Grafana for anonymous viewers on 3000', () => {
    const blocks = config();
    expect(blocks.get('prometheus')).toMatch(/deploy\/prometheus\.yml:\/etc\/prometheus\/prometheus\.yml|source: .*deploy\/prometheus\.yml/);
    expect(blocks.get('prometheus')).toMatch(/deploy\/alerts\.yml/);
    const grafana = blocks.get('grafana')!;
    expect(grafana).toMatch(/GF_AUTH_ANONYMOUS_ENABLED: '?"?true/);
    expect(grafana).toMatch(/GF_AUTH_ANONYMOUS_ORG_ROLE: Viewer/);
    expect(grafana).toMatch(/published: "?'?3000|3000:3000/);
    expect(grafana).toMatch(/deploy\/grafana\/provisioning/);
    expect(grafana).toMatch(/deploy\/grafana\/dashboards/);
  });

  it('runs Prometheus without its lifecycle and admin APIs, and Grafana without a known admin password', () => {
    const blocks = config();
    const prometheus = blocks.get('prometheus')!;
    expect(prometheus).not.toMatch(/enable-lifecycle|enable-admin-api/);
    const grafana = blocks.get('grafana')!;
    expect(grafana).not.toMatch(/GF_SECURITY_ADMIN_PASSWORD: '?"?admin/);
    expect(grafana).toMatch(/GF_SECURITY_ADMIN_PASSWORD: ''/);
    // Unset, the entrypoint draws a random one before Grafana's own start script runs.
    expect(grafana).toMatch(/GF_SECURITY_ADMIN_PASSWORD:-\$\$\(head\s+-c\s+32\s+\/dev\/urandom/);
    expect(grafana).toMatch(/exec \/run\.sh/);
  });

  it('takes the Grafana admin password from GRAFANA_ADMIN_PASSWORD', () => {
    const result = run(compose![0]!, [...compose!.slice(1), '-f', 'docker-compose.yml', 'config'], { env: { GRAFANA_ADMIN_PASSWORD: 'from-the-env' } });
    expect(result.status).toBe(0);
    expect(serviceBlocks(result.stdout).get('grafana')).toMatch(/GF_SECURITY_ADMIN_PASSWORD: from-the-env/);
  });
});

describe.skipIf(!hasPromtool)('Prometheus config and alert rules', () => {
  it('passes `promtool check config deploy/prometheus.yml`', () => {
    const result = run('promtool', ['check', 'config', 'deploy/prometheus.yml']);
    expect(result.stdout + result.stderr).toMatch(/SUCCESS/);
    expect(result.status).toBe(0);
  });

  it('passes `promtool check rules deploy/alerts.yml`', () => {
    const result = run('promtool', ['check', 'rules', 'deploy/alerts.yml']);
    expect(result.stdout + result.stderr).toMatch(/SUCCESS: \d+ rules found/);
    expect(result.status).toBe(0);
  });

  it('fires each alert on its situation and stays quiet on a healthy cluster (`promtool test rules`)', () => {
    const result = run('promtool', ['test', 'rules', 'alerts.promtest.yml'], { cwd: path.join(DEPLOY_DIR, 'test') });
    expect(result.stdout + result.stderr).toMatch(/SUCCESS/);
    expect(result.status).toBe(0);
  });
});

describe('Prometheus discovery', () => {
  const prometheusYml = readFileSync(path.join(DEPLOY_DIR, 'prometheus.yml'), 'utf8');

  it('finds every worker replica by DNS on port 3002, and the scheduler on 3001', () => {
    expect(prometheusYml).toMatch(/job_name: werkpilot-worker[\s\S]*?dns_sd_configs:\s*\n\s*- names: \[worker\]\s*\n\s*type: A\s*\n\s*port: 3002/);
    expect(prometheusYml).toMatch(/job_name: werkpilot-scheduler[\s\S]*?dns_sd_configs:\s*\n\s*- names: \[scheduler\]\s*\n\s*type: A\s*\n\s*port: 3001/);
  });

  it('names each worker target by its worker id instead of its container IP', () => {
    const workerJob = prometheusYml.slice(prometheusYml.indexOf('job_name: werkpilot-worker'));
    expect(workerJob).toMatch(/metric_relabel_configs:\s*\n\s*- source_labels: \[worker\]\s*\n\s*regex: \(\.\+\)\s*\n\s*target_label: instance/);
  });

  it('has a runbook in docs/operations.md for every alert', () => {
    const alerts = [...readFileSync(path.join(DEPLOY_DIR, 'alerts.yml'), 'utf8').matchAll(/- alert: (\w+)/g)].map((m) => m[1]!);
    expect(alerts.length).toBeGreaterThanOrEqual(4);
    const operations = readFileSync(path.join(REPO_ROOT, 'docs', 'operations.md'), 'utf8');
    for (const alert of alerts) expect(operations, `runbook for ${alert}`).toMatch(new RegExp(`^#+ ${alert}$`, 'm'));
  });
});

describe('Dockerfile', () => {
  const dockerfile = readFileSync(path.join(DEPLOY_DIR, 'Dockerfile'), 'utf8');
  const instructions = dockerfile
    .replace(/\\\n/g, ' ')
    .split('\n')
    .filter((l) => l.trim() && !l.trim().startsWith('#'));

  it('is multi-stage on node:24-slim with pnpm 10 from npm', () => {
    expect(dockerfile).toMatch(/ARG NODE_IMAGE=node:24-slim/);
    expect(instructions.filter((l) => l.startsWith('FROM ')).length).toBeGreaterThanOrEqual(2);
    expect(dockerfile).toMatch(/npm i -g pnpm@10/);
    expect(dockerfile).not.toMatch(/corepack enable/);
  });

  it('ships production dependencies only, through the checked install script', () => {
    expect(dockerfile).toMatch(/pnpm fetch --prod/);
    expect(dockerfile).toMatch(/sh deploy\/install-production\.sh/);
    expect(readFileSync(path.join(DEPLOY_DIR, 'install-production.sh'), 'utf8')).toMatch(/pnpm install --offline --prod --frozen-lockfile/);
    const runtime = dockerfile.slice(dockerfile.lastIndexOf('FROM '));
    expect(runtime).toMatch(/COPY --from=deps \/app \/app/);
    expect(runtime).not.toMatch(/pnpm install/);
  });

  it('runs as a non-root user with --expose-gc, a /healthz HEALTHCHECK and a role-picking entry point', () => {
    const runtime = instructions.slice(instructions.findLastIndex((l) => l.startsWith('FROM ')));
    const user = runtime.find((l) => l.startsWith('USER '));
    expect(user).toBeDefined();
    expect(user).not.toMatch(/USER (root|0)\b/);
    expect(runtime.join('\n')).toMatch(/NODE_OPTIONS=--expose-gc/);
    expect(runtime.join('\n')).toMatch(/HEALTHCHECK .*healthcheck\.mjs/);
    expect(readFileSync(path.join(DEPLOY_DIR, 'healthcheck.mjs'), 'utf8')).toMatch(/\/healthz/);
    expect(runtime.join('\n')).toMatch(/ENTRYPOINT \["\/bin\/sh", "\/app\/deploy\/docker-entrypoint\.sh"\]/);
    expect(runtime.join('\n')).toMatch(/CMD \["scheduler"\]/);
  });

  it('compiles in a build stage and runs the compiled binary with plain node', () => {
    expect(instructions.join('\n')).toMatch(/FROM pnpm AS build[\s\S]*pnpm build/);
    const runtimeFrom = instructions.findLastIndex((l) => l.startsWith('FROM '));
    const deps = instructions
      .slice(
        instructions.findIndex((l) => l.startsWith('FROM pnpm AS deps')),
        runtimeFrom,
      )
      .join('\n');
    for (const dist of ['packages/shared/dist', 'apps/worker/dist', 'apps/scheduler/dist', 'apps/cli/dist']) {
      expect(deps).toContain(`COPY --from=build /app/${dist} ${dist}`);
    }
    const entrypoint = readFileSync(path.join(DEPLOY_DIR, 'docker-entrypoint.sh'), 'utf8');
    expect(entrypoint).toMatch(/exec node "\$bin" "\$role" "\$@"/);
    expect(entrypoint).not.toMatch(/tsx/);
    expect(dockerfile).not.toMatch(/tsx/);
  });

  it('sets pnpm-only settings after npm ran, so npm has nothing to warn about', () => {
    const npmInstall = instructions.findIndex((l) => /npm i -g pnpm/.test(l));
    const setting = instructions.findIndex((l) => /npm_config_manage_package_manager_versions/.test(l));
    expect(setting).toBeGreaterThan(npmInstall);
  });

  it('has shell scripts that parse (`sh -n`)', () => {
    for (const script of ['docker-entrypoint.sh', 'install-production.sh', 'check-production.sh', 'compose-smoke.sh']) {
      const result = run('sh', ['-n', path.join(DEPLOY_DIR, script)]);
      expect(result.stderr, script).toBe('');
      expect(result.status, script).toBe(0);
    }
  });

  it('keeps node_modules, .git and local data out of the build context', () => {
    const ignore = readFileSync(path.join(REPO_ROOT, '.dockerignore'), 'utf8').split('\n');
    for (const entry of ['**/node_modules', '.git', '.data', 'test-results']) expect(ignore).toContain(entry);
  });
});
