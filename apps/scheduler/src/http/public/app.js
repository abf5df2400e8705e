// Werkpilot overview page: reads the operator API and updates live. Vanilla JS, no build step.
'use strict';

const REFRESH_MS = 2000;
const MAX_EVENTS = 80;
const state = { canMutate: false, metrics: null, lastRuns: new Map(), eventsLive: false, layoutKey: '' };

// The helpers the run-history pages use too (common.js, loaded first).
const { $, esc, api, toast, ago, ms, healthClass, circuitClass } = WP;
const scoreColor = (s) => (s >= 80 ? 'var(--ok)' : s >= 50 ? 'var(--warn)' : 'var(--bad)');

/** An agent's fleet controls in one cell: limits as configured, then how they stand now. */
function renderControls(c) {
  if (!c) return '<span class="muted">—</span>';
  const limits = [];
  const isDefault = c.overlap === 'skip' && c.concurrency && c.concurrency.limit === 1 && !c.concurrency.keyed;
  if (!isDefault) limits.push(`${c.concurrency ? `${c.concurrency.limit}${c.concurrency.keyed ? '/key' : ''}` : 'no limit'} · ${c.overlap}`);
  if (c.rateLimit) limits.push(`${c.rateLimit.max} per ${ms(c.rateLimit.perMs)}${c.rateLimit.keyed ? '/key' : ''}`);
  for (const l of c.limiters || []) limits.push(`${l.name}${l.max !== null ? ` ${l.max}/${ms(l.perMs)}` : ''}`);
  const now = [];
  if (c.running !== undefined) now.push(`${c.running} running`);
  if (c.waiting) now.push(`${c.waiting} waiting`);
  if (c.waitingForTokens) now.push(`${c.waitingForTokens} rate-limited`);
  const paused = c.schedulePaused ? '<span class="badge warn">schedule paused</span>' : '';
  if (limits.length === 0 && now.length === 0 && !paused) return '<span class="muted">one at a time</span>';
  return `${paused}${limits.length ? `<div>${limits.map(esc).join(' · ')}</div>` : ''}${now.length ? `<div class="agent-meta">${now.map(esc).join(' · ')}</div>` : ''}`;
}

function renderPills(m) {
  const workers = m.system.workers || [];
  const sched = m.system.scheduler;
  const pills = [
    ['Queued', m.executionQueueSize],
    ['Active', m.queues.agents.active],
    ['DLQ', m.deadLetterQueueSize, m.deadLetterQueueSize > 0],
    ['Workers', workers.length, workers.length === 0],
    ['Heap', `${m.system.memory.heapPercent}%`],
    ['RSS', `${m.system.memory.rssMB} MB`],
  ];
  if (sched) pills.push(['Leader', sched.leaderId ? (sched.isLeader ? 'this replica' : 'other replica') : 'none', !sched.leaderId]);
  $('#pills').innerHTML = pills.map(([k, v, bad]) => `<span class="pill${bad ? ' bad' : ''}">${esc(k)} <b>${esc(v)}</b></span>`).join('');
}

function renderAgents(m) {
  const names = Object.keys(m.agents).sort((a, b) => m.agents[a].dependencyDepth - m.agents[b].dependencyDepth || a.localeCompare(b));
  const disabled = state.canMutate ? '' : ' disabled title="read-only: configure dashboard credentials to enable actions"';
  let healthy = 0;
  const rows = names.map((name) => {
    const a = m.agents[name];
    const controls = m.controls?.agents[name];
    if (a.health === 'healthy') healthy++;
    const rate = a.runs > 0 ? Math.round((a.successes / a.runs) * 100) : null;
    const changed = state.lastRuns.has(name) && state.lastRuns.get(name) !== `${a.runs}/${a.skipped}`;
    state.lastRuns.set(name, `${a.runs}/${a.skipped}`);
    const enabled = a.enabled !== false;
    const reasons = (a.healthReasons || []).length ? `<div class="reasons">${(a.healthReasons || []).map(esc).join(' · ')}</div>` : '';
    const score =
      a.score === null || a.score === undefined
        ? '<span class="muted">—</span>'
        : `<div class="score"><div class="bar"><i style="width:${a.score}%;background:${scoreColor(a.score)}"></i></div><b>${a.score}</b></div>`;
    const last = a.lastRunAt
      ? `<span class="nowrap">${esc(ago(a.lastRunAt))}</span><div class="agent-meta">${esc(a.lastOutcome || '')}${a.lastOutcome === 'failure' && a.lastError ? `: ${esc(a.lastError)}` : ''}</div>`
      : '<span class="muted">never</span>';
    const schedule = a.schedule ? `cron ${esc(a.schedule.cron)}` : 'manual only';
    return `<tr data-agent="${esc(name)}"${changed ? ' class="flash"' : ''}>
      <td><a class="agent-name" href="/agents/${encodeURIComponent(name)}" title="charts, recent runs, definition">${esc(name)}</a><div class="agent-meta">${schedule}${a.dependsOn?.length ? ` · needs ${a.dependsOn.map(esc).join(', ')}` : ''}</div></td>
      <td><span class="badge ${healthClass(a.health)}">${esc(a.health || 'unknown')}</span>${reasons}</td>
      <td><span class="badge ${circuitClass(a.circuit)}">${esc(a.circuit || 'n/a')}</span>${a.restartsLastHour ? `<div class="agent-meta">${a.restartsLastHour} restarts/h</div>` : ''}</td>
      <td>${score}</td>
      <td class="num">${ms(a.p50)}</td><td class="num">${ms(a.p95)}</td><td class="num">${ms(a.p99)}</td>
      <td class="num" title="${a.successes} ok · ${a.failures} failed · ${a.skipped} skipped">${a.runs}${rate === null ? '' : ` <span class="muted">(${rate}%)</span>`}</td>
      <td>${last}</td>
      <td class="num">${a.priority}</td><td class="num">${a.dependencyDepth}</td>
      <td>${a.enabled === undefined ? '<span class="muted">—</span>' : `<span class="badge ${enabled ? 'ok' : 'idle'}">${enabled ? 'on' : 'off'}</span>`}</td>
      <td class="controls">${renderControls(controls)}</td>
      <td><div class="actions">
        <button class="btn primary" data-action="run" data-agent="${esc(name)}"${disabled}>Run</button>
        ${a.enabled === undefined ? '' : `<button class="btn" data-action="${enabled ? 'disable' : 'enable'}" data-agent="${esc(name)}"${disabled}>${enabled ? 'Disable' : 'Enable'}</button>`}
        ${a.circuit && a.circuit !== 'closed' ? `<button class="btn" data-action="reset" data-agent="${esc(name)}"${disabled}>Reset circuit</button>` : ''}
        ${a.schedule && controls ? `<button class="btn" data-action="${controls.schedulePaused ? 'resume' : 'pause'}" data-agent="${esc(name)}"${disabled}>${controls.schedulePaused ? 'Resume schedule' : 'Pause schedule'}</button>` : ''}
      </div></td>
    </tr>`;
  });
  $('#agents tbody').innerHTML = rows.join('');
  $('#agents-summary').textContent = `${names.length} agents · ${healthy} healthy`;
}

function renderQueues(m) {
  const byPriority = m.queues.agentsByPriority || {};
  const labels = { 1: 'P1 critical', 2: 'P2 important', 3: 'P3 normal' };
  const max = Math.max(1, ...Object.values(byPriority));
  const rows = [1, 2, 3]
    .map((p) => {
      const n = byPriority[p] || 0;
      return `<div class="queue-row p${p}"><span>${labels[p]}</span><div class="track"><i style="width:${(n / max) * 100}%"></i></div><b class="num">${n}</b></div>`;
    })
    .join('');
  const q = m.queues.agents;
  const stats = [
    ['waiting', q.waiting + q.prioritized],
    ['delayed', q.delayed],
    ['active', q.active],
    ['completed', q.completed],
    ['failed', q.failed],
    ['system', m.queues.system.waiting + m.queues.system.prioritized + m.queues.system.active + m.queues.system.delayed],
  ];
  const limiters = Object.entries(m.controls?.limiters || {})
    .map(
      ([name, l]) =>
        `<div class="queue-row"><span title="shared limiter: tokens granted or booked in its window">${esc(name)}</span><div class="track"><i style="width:${Math.min(100, (l.inWindow / l.max) * 100)}%"></i></div><b class="num">${l.inWindow}/${l.max} per ${ms(l.perMs)}</b></div>`,
    )
    .join('');
  $('#queues').innerHTML = `${rows}${limiters}<div class="queue-states">${stats.map(([k, v]) => `<div class="stat"><span>${k}</span><b>${v}</b></div>`).join('')}</div>`;
  $('#queue-summary').textContent = `${m.executionQueueSize} waiting to run`;
}

function renderWorkers(m) {
  const workers = m.system.workers || [];
  $('#workers-summary').textContent = `${workers.length} live`;
  $('#workers').innerHTML = workers.length
    ? workers
        .map(
          (w) => `<div class="worker"><span class="id" title="${esc(w.id)}">${esc(w.id)}</span>
            <span class="badge ${w.isUnderMemoryPressure ? 'warn' : 'ok'}">${w.active}/${w.concurrency} busy</span>
            <span class="meta">${esc(w.host)} · pid ${esc(w.pid)} · heap ${esc(w.heapPercent)}% · rss ${esc(w.rssMB)} MB · seen ${esc(ago(w.lastSeenAt))}</span></div>`,
        )
        .join('')
    : '<div class="empty">No live worker: start one with <code>pnpm worker</code>.</div>';
}

function renderDlq(m) {
  const entries = m.deadLetterQueue || [];
  $('#dlq-summary').textContent = `${m.deadLetterQueueSize} total · showing ${entries.length}`;
  $('#retry-all').disabled = !state.canMutate || entries.length === 0;
  $('#retry-all').title = state.canMutate ? '' : 'read-only: configure dashboard credentials to enable actions';
  const disabled = state.canMutate ? '' : ' disabled title="read-only: configure dashboard credentials to enable actions"';
  $('#dlq tbody').innerHTML = entries.length
    ? entries
        .map(
          (e) => `<tr data-run="${esc(e.id)}">
            <td class="when" title="${esc(e.failedAt)}">${esc(ago(e.failedAt))}</td>
            <td class="agent-name"><a href="/agents/${encodeURIComponent(e.agent)}">${esc(e.agent)}</a></td>
            <td class="err"><div title="${esc(e.error)}">${esc(e.error)}</div><span class="mono" title="worker ${esc(e.workerId || '—')}"><a href="/runs/${encodeURIComponent(e.id)}">${esc(e.id)}</a> · ${e.attemptsMade} attempt${e.attemptsMade === 1 ? '' : 's'}${e.trigger ? ` · ${esc(e.trigger)}` : ''}</span></td>
            <td><div class="actions"><button class="btn primary" data-action="retry" data-run="${esc(e.id)}"${disabled}>Retry</button>
              <button class="btn" data-action="delete" data-run="${esc(e.id)}"${disabled}>Delete</button></div></td>
          </tr>`,
        )
        .join('')
    : '<tr><td colspan="4" class="empty">Empty: no run has exhausted its attempts.</td></tr>';
}

function renderDag(m) {
  const agents = m.agents;
  const layers = [];
  for (const [name, a] of Object.entries(agents)) {
    layers[a.dependencyDepth] ||= [];
    layers[a.dependencyDepth].push(name);
  }
  const key = JSON.stringify(layers);
  if (key !== state.layoutKey) {
    state.layoutKey = key;
    $('#dag-layers').innerHTML = layers
      .map(
        (names, i) =>
          `<div class="dag-layer"><h3>Layer ${i}</h3>${(names || [])
            .sort()
            .map((n) => `<div class="dag-node" id="node-${esc(n)}" data-node="${esc(n)}"><div class="n">${esc(n)}</div><div class="s"></div></div>`)
            .join('')}</div>`,
      )
      .join('');
  }
  for (const [name, a] of Object.entries(agents)) {
    const node = document.getElementById(`node-${name}`);
    if (!node) continue;
    node.className = `dag-node ${healthClass(a.health)}`;
    node.querySelector('.s').textContent = `${a.health || 'unknown'} · score ${a.score ?? '—'} · ${a.runs} runs`;
  }
  drawEdges(agents);
}

function drawEdges(agents) {
  const svg = $('#dag-edges');
  const box = $('#dag').getBoundingClientRect();
  const paths = [];
  for (const [name, a] of Object.entries(agents)) {
    const to = document.getElementById(`node-${name}`);
    for (const dep of a.dependsOn || []) {
      const from = document.getElementById(`node-${dep}`);
      if (!from || !to) continue;
      const f = from.getBoundingClientRect();
      const t = to.getBoundingClientRect();
      const x1 = f.left + f.width / 2 - box.left;
      const y1 = f.bottom - box.top;
      const x2 = t.left + t.width / 2 - box.left;
      const y2 = t.top - box.top;
      const c = Math.max(12, (y2 - y1) / 2);
      paths.push(`<path d="M${x1},${y1} C${x1},${y1 + c} ${x2},${y2 - c} ${x2},${y2}"/>`);
    }
  }
  svg.innerHTML = paths.join('');
}

async function renderReport() {
  try {
    // The list (not /latest) answers 200 before the first night, so the console stays clean.
    const report = (await api('/api/reports')).reports[0];
    if (!report) throw new Error('No nightly report yet: the first one is written at NIGHTLY_CRON (23:00 Europe/Zurich by default).');
    $('#report-date').textContent = `${new Date(report.generatedAt).toLocaleString()}`;
    const rows = Object.values(report.agents || {})
      .map(
        (r) => `<tr><td class="agent-name">${esc(r.agent)}</td><td class="num">${r.score ?? '—'}</td><td class="num">${r.runs}</td>
          <td class="num">${r.failureRate === null || r.failureRate === undefined ? '—' : `${Math.round(r.failureRate * 100)}%`}</td>
          <td class="num">${ms(r.p95)}</td></tr>${(r.advice || []).length ? `<tr><td></td><td colspan="4" class="advice">${r.advice.map(esc).join('<br>')}</td></tr>` : ''}`,
      )
      .join('');
    $('#report').innerHTML =
      `<div class="report"><table><thead><tr><th>Agent</th><th class="num">Score</th><th class="num">Runs</th><th class="num">Fail</th><th class="num">p95</th></tr></thead><tbody>${rows}</tbody></table></div>`;
  } catch (err) {
    $('#report-date').textContent = '';
    $('#report').innerHTML = `<div class="empty">${esc(err.message)}</div>`;
  }
}

const EVENT_CLASS = {
  'agent:completed': 'ok',
  'circuit:closed': 'ok',
  'memory:recovered': 'ok',
  'worker:online': 'ok',
  'agent:failed': 'bad',
  'agent:dlq': 'bad',
  'circuit:opened': 'bad',
  'agent:timeout': 'bad',
  'agent:retrying': 'warn',
  'agent:skipped': 'warn',
  'dependency:unhealthy': 'warn',
  'health:changed': 'warn',
  'memory:pressure': 'warn',
  'agent:cancelled': 'warn',
  'agent:rate-limited': 'warn',
};

function describeEvent(e) {
  const d = e.data || {};
  if (d.error) return d.error;
  if (d.reasons) return d.reasons.join('; ');
  if (e.type === 'agent:rate-limited') return `waits ${ms(d.waitMs)} for ${d.limiter === 'rateLimit' ? 'its rate limit' : d.limiter || 'its tokens'}`;
  if (d.durationMs !== undefined) return `${d.durationMs} ms${d.attempt > 1 ? ` · attempt ${d.attempt}` : ''}`;
  if (d.state) return `${d.previous ? `${d.previous} → ` : ''}${d.state}`;
  if (d.payload !== undefined) return JSON.stringify(d.payload);
  return Object.entries(d)
    .filter(([k]) => k !== 'runId' && k !== 'workerId')
    .map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`)
    .join(' ');
}

function addEvent(e, isNew) {
  const list = $('#events');
  const li = document.createElement('li');
  if (isNew) li.className = 'new';
  const at = new Date(e.at);
  li.innerHTML = `<time>${at.toLocaleTimeString([], { hour12: false })}</time><span class="type ${EVENT_CLASS[e.type] || ''}" title="${esc(e.type)}">${esc(e.type)}</span><span class="detail" title="${esc(describeEvent(e))}">${e.agent ? `<b>${esc(e.agent)}</b> ` : ''}${esc(describeEvent(e))}</span>`;
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

async function startEvents() {
  try {
    const { events } = await api(`/api/events/recent?limit=40`);
    for (const e of events) addEvent(e, false);
  } catch {
    // history is optional
  }
  if (!('EventSource' in window)) return pollEvents();
  const source = new EventSource('/api/events');
  source.onopen = () => {
    state.eventsLive = true;
    $('#events-source').textContent = 'live (server-sent events)';
  };
  source.onmessage = (message) => {
    try {
      const event = JSON.parse(message.data);
      addEvent(event, true);
      if (/^(agent:dlq|circuit:|health:changed|worker:|agent:completed|agent:failed|agent:skipped|agent:rate-limited)/.test(event.type)) scheduleRefresh();
    } catch {
      // ignore malformed messages
    }
  };
  source.onerror = () => {
    state.eventsLive = false;
    // A refused stream (503: SSE_MAX_CLIENTS reached) is not retried by the browser: poll instead.
    if (source.readyState === EventSource.CLOSED) {
      source.close();
      pollEvents();
      return;
    }
    $('#events-source').textContent = 'reconnecting…';
  };
}

async function pollEvents() {
  $('#events-source').textContent = 'polling';
  let last = '';
  setInterval(async () => {
    const { events } = await api('/api/events/recent?limit=20').catch(() => ({ events: [] }));
    for (const e of events) {
      const key = `${e.at}${e.type}${e.agent}`;
      if (key > last) {
        addEvent(e, true);
        last = key;
      }
    }
  }, REFRESH_MS);
}

let refreshTimer;
function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, 250);
}

async function refresh() {
  try {
    const m = await api('/api/metrics');
    state.metrics = m;
    renderPills(m);
    renderAgents(m);
    renderQueues(m);
    renderWorkers(m);
    renderDlq(m);
    renderDag(m);
    $('#live').className = 'live on';
    $('#live').textContent = `updated ${new Date().toLocaleTimeString([], { hour12: false })}`;
  } catch (err) {
    $('#live').className = 'live';
    $('#live').textContent = `offline: ${err.message}`;
  }
}

async function act(button) {
  const { action, agent, run } = button.dataset;
  const routes = {
    run: ['POST', `/api/agents/${encodeURIComponent(agent)}/run`, `run of ${agent} queued`],
    enable: ['POST', `/api/agents/${encodeURIComponent(agent)}/enable`, `${agent} enabled`],
    disable: ['POST', `/api/agents/${encodeURIComponent(agent)}/disable`, `${agent} disabled`],
    reset: ['POST', `/api/agents/${encodeURIComponent(agent)}/circuit/reset`, `circuit of ${agent} reset`],
    pause: ['POST', `/api/agents/${encodeURIComponent(agent)}/schedule/pause`, `schedule of ${agent} paused (manual runs still run)`],
    resume: ['POST', `/api/agents/${encodeURIComponent(agent)}/schedule/resume`, `schedule of ${agent} resumed`],
    retry: ['POST', `/api/dlq/${encodeURIComponent(run)}/retry`, `run ${run} retried`],
    delete: ['DELETE', `/api/dlq/${encodeURIComponent(run)}`, `run ${run} deleted`],
    'retry-all': ['POST', '/api/dlq/retry', 'every dead-lettered run retried'],
  };
  const [method, path, done] = routes[action];
  button.disabled = true;
  try {
    const body = await api(path, { method, body: method === 'POST' ? '{}' : undefined });
    toast(body.runId ? `${done}: ${body.runId}` : done);
    const row = button.closest('tr[data-run]');
    if (row && (action === 'retry' || action === 'delete')) row.remove();
  } catch (err) {
    toast(err.message, true);
  } finally {
    button.disabled = false;
    scheduleRefresh();
  }
}

document.addEventListener('click', (event) => {
  const button = event.target.closest('button[data-action]');
  if (button && !button.disabled) act(button);
});
$('#retry-all').dataset.action = 'retry-all';
window.addEventListener('resize', () => state.metrics && drawEdges(state.metrics.agents));

(async () => {
  const session = await api('/api/session').catch(() => ({ canMutate: false, authMode: 'none' }));
  state.canMutate = session.canMutate;
  const mode = $('#mode');
  mode.textContent = session.canMutate ? 'operator' : 'read-only';
  mode.className = `mode${session.canMutate ? ' rw' : ''}`;
  mode.title = session.canMutate ? `signed in (${session.authMode})` : 'set DASHBOARD_TOKEN or DASHBOARD_USER/DASHBOARD_PASSWORD to enable actions';
  await refresh();
  setInterval(refresh, REFRESH_MS);
  renderReport();
  setInterval(renderReport, 60_000);
  startEvents();
})();
