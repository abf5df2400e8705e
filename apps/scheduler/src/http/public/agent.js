// Agent page (/agents/<name>): charts from the per-minute rollups, recent runs, definition, health,
// circuit, boot state and the last nightly advice.
'use strict';

(() => {
  const { $, esc, api, toast, ms, ago, healthClass, circuitClass, outcomeOf, outcomeClass, runLink, agentLink, guard } = WP;
  const name = decodeURIComponent(location.pathname.split('/')[2] || '');
  const state = { range: 'lastHour', rollups: null, agent: null };

  function renderCharts() {
    const points = state.rollups[state.range];
    const step = state.range === 'lastHour' ? 'minute' : 'hour';
    $('#outcome-chart').innerHTML = `${Charts.outcomeLegend()}${Charts.outcomes(points, step)}`;
    $('#duration-chart').innerHTML = `${Charts.durationLegend()}${Charts.durations(points, step)}`;
    const sum = (k) => points.reduce((n, p) => n + p[k], 0);
    $('#charts-summary').textContent = `${sum('success')} ok · ${sum('failure')} failed · ${sum('skipped')} skipped · ${sum('cancelled')} cancelled`;
    for (const b of document.querySelectorAll('[data-range]')) b.setAttribute('aria-pressed', String(b.dataset.range === state.range));
  }

  function renderHead(a) {
    document.title = `Werkpilot · ${a.name}`;
    $('#crumb').textContent = a.name;
    $('#agent-title').textContent = a.name;
    const enabled = a.enabled !== false;
    $('#agent-badges').innerHTML = [
      `<span class="badge ${healthClass(a.health)}" title="health">${esc(a.health || 'unknown')}</span>`,
      `<span class="badge ${circuitClass(a.circuit)}" title="circuit">circuit ${esc(a.circuit || 'n/a')}</span>`,
      a.enabled === undefined ? '' : `<span class="badge ${enabled ? 'ok' : 'idle'}">${enabled ? 'enabled' : 'disabled'}</span>`,
      a.score === null || a.score === undefined ? '' : `<span class="badge idle" title="performance score">score ${esc(a.score)}</span>`,
    ].join(' ');
    const g = guard();
    $('#agent-actions').innerHTML = [
      `<button class="btn primary" data-action="run"${g}>Run now</button>`,
      `<button class="btn" data-action="run-pipeline"${g} title="${g ? esc(WP.READ_ONLY) : 'run it and every agent that depends on it'}">Run with dependents</button>`,
      a.enabled === undefined ? '' : `<button class="btn" data-action="${enabled ? 'disable' : 'enable'}"${g}>${enabled ? 'Disable' : 'Enable'}</button>`,
      a.circuit && a.circuit !== 'closed' ? `<button class="btn" data-action="reset"${g}>Reset circuit</button>` : '',
    ].join('');
  }

  function renderDefinition(a) {
    const list = (names) => (names?.length ? names.map(agentLink).join(', ') : '<span class="muted">none</span>');
    const c = a.controls || {};
    const limits = [];
    if (c.concurrency) limits.push(`${c.concurrency.limit} at a time${c.concurrency.keyed ? ' per key' : ''}`);
    if (c.rateLimit) limits.push(`${c.rateLimit.max} per ${ms(c.rateLimit.perMs)}${c.rateLimit.keyed ? ' per key' : ''}`);
    for (const l of c.limiters || []) limits.push(`limiter ${l.name}`);
    const rows = [
      [
        'Schedule',
        a.schedule
          ? `cron <code>${esc(a.schedule.cron)}</code>${a.schedule.tz ? ` (${esc(a.schedule.tz)})` : ''}${c.schedulePaused ? ' <span class="badge warn">paused</span>' : ''}`
          : 'manual only',
      ],
      ['Priority', esc(a.priority)],
      ['Depends on', list(a.dependsOn)],
      ['Needed by', list(a.dependents)],
      ['Timeout', ms(a.timeoutMs)],
      ['Retry', a.retry ? `${esc(a.retry.attempts)} attempts, exponential from ${ms(a.retry.backoff?.delayMs)}` : '—'],
      ['Overlap', esc(a.overlap || c.overlap || '—')],
      ['Limits', limits.length ? limits.map(esc).join(' · ') : 'one at a time'],
      ['Circuit opens after', `${esc(a.maxRestartsPerHour)} restarts in an hour`],
    ];
    $('#definition').innerHTML = rows.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${v}</dd>`).join('');
  }

  function renderHealth(a) {
    const boot = a.boot ? `${esc(a.boot.status || a.boot.state || JSON.stringify(a.boot))}${a.boot.reason ? ` — ${esc(a.boot.reason)}` : ''}` : '<span class="muted">—</span>';
    const reasons = (a.healthReasons || []).length ? `<ul>${a.healthReasons.map((r) => `<li>${esc(r)}</li>`).join('')}</ul>` : '<span class="muted">none</span>';
    const rows = [
      ['Health', `<span class="badge ${healthClass(a.health)}">${esc(a.health || 'unknown')}</span>`],
      ['Reasons', reasons],
      ['Circuit', `<span class="badge ${circuitClass(a.circuit)}">${esc(a.circuit || 'n/a')}</span> ${esc(a.restartsLastHour ?? 0)} restarts in the last hour`],
      ['Boot', boot],
      ['Runs', `${esc(a.runs ?? 0)} · ${esc(a.successes ?? 0)} ok · ${esc(a.failures ?? 0)} failed · ${esc(a.skipped ?? 0)} skipped`],
      ['p50 / p95 / p99', `${ms(a.p50)} / ${ms(a.p95)} / ${ms(a.p99)} <span class="muted">(last 1000 runs)</span>`],
      ['Last run', `${esc(ago(a.lastRunAt))}${a.lastOutcome ? ` · ${esc(a.lastOutcome)}` : ''}`],
      ['Last error', a.lastError ? `<span class="sig">${esc(a.lastError)}</span>` : '<span class="muted">none</span>'],
    ];
    $('#health').innerHTML = rows.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${v}</dd>`).join('');
  }

  function renderRuns(runs) {
    $('#recent-runs tbody').innerHTML = runs.length
      ? runs
          .map((r) => {
            const o = outcomeOf(r);
            const reason = r.error || (r.result && (r.result.reasons || []).join('; ')) || r.result?.reason || '';
            return `<tr data-run="${esc(r.id)}"><td>${runLink(r.id)}</td><td><span class="badge ${outcomeClass(o)}">${esc(o)}</span></td><td>${esc(r.trigger || '—')}</td>
              <td class="num">${ms(r.timings.durationMs)}</td><td class="num">${esc(r.attempts.made || r.attempts.started)}/${esc(r.attempts.max)}</td>
              <td class="nowrap">${esc(ago(r.timings.finishedAt || r.timings.queuedAt))}</td><td class="sig">${esc(reason)}</td></tr>`;
          })
          .join('')
      : '<tr><td colspan="7" class="empty">No run of this agent is kept in Redis.</td></tr>';
  }

  /** The agent's circuit openings and closings, health changes and boot verdicts still in the bus history. */
  async function renderHistory() {
    const { events } = await api(`/api/events/recent?limit=1000&agent=${encodeURIComponent(name)}&type=circuit:*,health:changed,boot:*,dependency:unhealthy`).catch(() => ({ events: [] }));
    const rows = events
      .slice()
      .sort((a, b) => Date.parse(b.at) - Date.parse(a.at))
      .slice(0, 30)
      .map((e) => {
        const d = e.data || {};
        const why = d.reason || (d.reasons || []).join('; ');
        const detail = d.state
          ? `${d.previous ? `${d.previous} → ` : ''}${d.state}${why ? ` — ${why}` : ''}`
          : d.status
            ? `${d.status}${d.layer !== undefined ? ` (layer ${d.layer})` : ''}${why ? ` — ${why}` : ''}`
            : why;
        const isBad = /opened|unhealthy/.test(e.type) || d.state === 'unhealthy' || (d.status && d.status !== 'ok');
        const cls = isBad ? 'bad' : /closed/.test(e.type) || d.state === 'healthy' || d.status === 'ok' ? 'ok' : 'warn';
        return `<li><time>${esc(new Date(e.at).toLocaleTimeString([], { hour12: false }))}</time><span class="type ${cls}">${esc(e.type)}</span><span class="detail" title="${esc(detail)}">${esc(detail)}</span></li>`;
      });
    $('#history').innerHTML = rows.length ? rows.join('') : '<li class="empty">No circuit, health or boot change in the recent history.</li>';
  }

  async function renderAdvice() {
    try {
      const report = await api('/api/reports/latest');
      const mine = report.agents?.[name];
      $('#advice-date').textContent = new Date(report.generatedAt).toLocaleString();
      $('#advice').innerHTML = mine
        ? `<dl class="fields"><dt>Score</dt><dd>${esc(mine.score ?? '—')}${mine.flagged ? ' <span class="badge bad">flagged</span>' : ''}</dd><dt>Runs</dt><dd>${esc(mine.runs)}</dd>
           <dt>p95</dt><dd>${ms(mine.p95)}</dd><dt>Advice</dt><dd>${(mine.advice || []).length ? mine.advice.map(esc).join('<br>') : '<span class="muted">none</span>'}</dd></dl>`
        : '<div class="empty">The last report does not mention this agent.</div>';
    } catch (err) {
      $('#advice').innerHTML = `<div class="empty">${esc(err.status === 404 ? 'No nightly report yet.' : err.message)}</div>`;
    }
  }

  async function refresh() {
    const [agent, rollups, runs] = await Promise.all([
      api(`/api/agents/${encodeURIComponent(name)}`),
      api(`/api/agents/${encodeURIComponent(name)}/rollups`),
      api(`/api/runs?agent=${encodeURIComponent(name)}&limit=20`),
    ]);
    state.agent = agent;
    state.rollups = rollups;
    renderHead(agent);
    renderCharts();
    renderDefinition(agent);
    renderHealth(agent);
    renderRuns(runs.runs);
    renderHistory();
  }

  async function act(button) {
    const base = `/api/agents/${encodeURIComponent(name)}`;
    const routes = {
      run: [`${base}/run`, '{}', 'run queued'],
      'run-pipeline': [`${base}/run`, '{"withDependents":true}', 'pipeline queued'],
      enable: [`${base}/enable`, '{}', 'enabled'],
      disable: [`${base}/disable`, '{}', 'disabled'],
      reset: [`${base}/circuit/reset`, '{}', 'circuit reset'],
    };
    const [path, body, done] = routes[button.dataset.action];
    button.disabled = true;
    try {
      const answer = await api(path, { method: 'POST', body });
      toast(answer.runId ? `${done}: ${answer.runId}` : `${name} ${done}`);
    } catch (err) {
      toast(err.message, true);
    } finally {
      button.disabled = false;
      setTimeout(refresh, 300);
    }
  }

  document.addEventListener('click', (event) => {
    const range = event.target.closest('[data-range]');
    if (range) {
      state.range = range.dataset.range;
      if (state.rollups) renderCharts();
      return;
    }
    const button = event.target.closest('button[data-action]');
    if (button && !button.disabled) act(button);
  });

  (async () => {
    $('#all-runs').href = `/runs?agent=${encodeURIComponent(name)}`;
    await WP.start();
    try {
      await refresh();
    } catch (err) {
      $('#agent-title').textContent = name;
      $('#agent-page').insertAdjacentHTML('beforeend', `<section class="card wide"><div class="empty" id="page-error">${esc(err.message)}</div></section>`);
      return;
    }
    renderAdvice();
    setInterval(() => refresh().catch(() => undefined), 10_000);
  })();
})();
