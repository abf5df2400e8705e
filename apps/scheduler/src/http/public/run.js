// Run page (/runs/<id>): input, result or error with stack, attempts, log lines, timings, skip or
// cancel reason, and for a pipeline run the pipeline's graph with each run's state.
'use strict';

(() => {
  const { $, esc, api, toast, ms, time, outcomeOf, outcomeClass, agentLink, guard, json } = WP;
  const id = decodeURIComponent(location.pathname.slice('/runs/'.length));

  const fields = (rows) => rows.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${v}</dd>`).join('');

  function renderRun(run) {
    const o = outcomeOf(run);
    document.title = `Werkpilot · run ${run.id}`;
    $('#crumb').textContent = run.id;
    $('#run-title').innerHTML = `${agentLink(run.agent)} <span class="muted mono">${esc(run.id)}</span>`;
    $('#run-badges').innerHTML = `<span class="badge ${outcomeClass(o)}" id="run-outcome">${esc(o)}</span>`;
    const g = guard();
    const isFinished = run.state === 'completed' || run.state === 'failed';
    $('#run-actions').innerHTML = [
      run.state === 'failed' ? `<button class="btn primary" data-action="retry"${g}>Retry</button>` : '',
      isFinished ? '' : `<button class="btn" data-action="cancel"${g}>Cancel</button>`,
      `<button class="btn" data-action="again"${g} title="${g ? esc(WP.READ_ONLY) : 'queue a new run of this agent with the same input'}">Run again</button>`,
    ].join('');
    $('#run-fields').innerHTML = fields([
      ['Agent', agentLink(run.agent)],
      ['State', esc(run.state)],
      ['Trigger', esc(run.trigger || '—')],
      ['Pipeline', run.pipelineId ? `<a href="/runs?pipeline=${encodeURIComponent(run.pipelineId)}">${esc(run.pipelineId)}</a>` : '—'],
      ['Worker', esc(run.workerId || '—')],
      ['Trace', esc(run.traceId || '—')],
    ]);
    const t = run.timings;
    const waited = t.startedAt && t.queuedAt ? Date.parse(t.startedAt) - Date.parse(t.queuedAt) : null;
    $('#timings').innerHTML = fields([
      ['Queued', esc(time(t.queuedAt))],
      ['Waited', `${ms(waited)} <span class="muted">(queue, dependencies, backoff, until the last start)</span>`],
      ['Started', esc(time(t.startedAt))],
      ['Ended', esc(time(t.finishedAt))],
      ['Duration', ms(t.durationMs)],
    ]);
    renderOutcome(run, o);
    renderAttempts(run).catch(() => undefined);
    $('#input').textContent = json(run.data);
  }

  function renderOutcome(run, o) {
    const result = run.result || {};
    if (o === 'failed') {
      $('#outcome-title').textContent = 'Error';
      const stack = run.stacktrace.length ? run.stacktrace[run.stacktrace.length - 1] : '';
      $('#outcome').innerHTML =
        `<pre class="block err" id="error">${esc(run.error || 'unknown error')}</pre>${stack ? `<h3 class="muted">Stack trace (last attempt)</h3><pre class="block err" id="stack">${esc(stack)}</pre>` : ''}`;
    } else if (o === 'skipped') {
      $('#outcome-title').textContent = 'Skipped';
      $('#outcome').innerHTML = `<ul id="reasons">${(result.reasons || []).map((r) => `<li>${esc(r)}</li>`).join('')}</ul>`;
    } else if (o === 'cancelled') {
      $('#outcome-title').textContent = 'Cancelled';
      $('#outcome').innerHTML = `<p id="reasons">${esc(result.reason || 'cancelled by an operator')}</p>`;
    } else if (run.state === 'completed') {
      $('#outcome-title').textContent = 'Result';
      $('#outcome').innerHTML = `<pre class="block" id="result">${esc(json(result.result !== undefined ? result.result : result))}</pre>`;
    } else {
      $('#outcome-title').textContent = 'Not ended yet';
      $('#outcome').innerHTML = `<div class="empty">${esc(run.state)}${run.error ? ` — last attempt failed: ${esc(run.error)}` : ''}</div>`;
    }
  }

  /**
   * Every attempt with its outcome, error and duration: from the run's events in the bus history (the
   * last 1000 events), else from what BullMQ keeps (a stack trace per failed attempt, the last duration).
   */
  async function renderAttempts(run) {
    const a = run.attempts;
    $('#attempts-summary').textContent = `${a.made} made · ${a.started} started · ${a.max} allowed`;
    const { events } = await api(`/api/events/recent?limit=1000&agent=${encodeURIComponent(run.agent)}&type=agent:completed,agent:failed,agent:skipped,agent:cancelled`).catch(() => ({
      events: [],
    }));
    const mine = events.filter((e) => e.data && e.data.runId === run.id).sort((x, y) => Date.parse(x.at) - Date.parse(y.at));
    let items;
    if (mine.length) {
      items = mine.map((e) => {
        const d = e.data;
        const what = { 'agent:completed': 'succeeded', 'agent:failed': d.willRetry ? 'failed, retried' : 'failed', 'agent:skipped': 'skipped', 'agent:cancelled': 'cancelled' }[e.type];
        const detail = d.error || (d.reasons || []).join('; ') || d.reason || '';
        return `<li data-attempt="${esc(d.attempt)}">attempt ${esc(d.attempt)} ${esc(what)}${d.durationMs !== undefined ? ` in ${ms(d.durationMs)}` : ''} <span class="muted">${esc(new Date(e.at).toLocaleTimeString([], { hour12: false }))}${d.workerId ? ` on ${esc(d.workerId)}` : ''}</span>${detail ? `<div class="sig">${esc(detail)}</div>` : ''}</li>`;
      });
    } else {
      // BullMQ keeps one stack trace per failed attempt, oldest first; its first line is that attempt's error.
      items = run.stacktrace.map((stack, i) => `<li data-attempt="${i + 1}">attempt ${i + 1} failed: <span class="sig">${esc(String(stack).split('\n')[0])}</span></li>`);
      if (run.state === 'completed') items.push(`<li>attempt ${a.made || a.started} ${esc(outcomeOf(run))} in ${ms(run.timings.durationMs)}</li>`);
    }
    $('#attempts').innerHTML = items.length ? `<ol class="attempt-list">${items.join('')}</ol>` : '<div class="empty">No attempt has ended yet.</div>';
  }

  async function renderLogs() {
    try {
      const { logs, count } = await api(`/api/runs/${encodeURIComponent(id)}/logs`);
      $('#logs-summary').textContent = `${count} line${count === 1 ? '' : 's'}`;
      $('#logs').textContent = logs.length ? logs.join('\n') : 'The run logged nothing through ctx.log.';
    } catch (err) {
      $('#logs').textContent = err.message;
    }
  }

  /** The pipeline's runs in layers by dependency depth, as an SVG of links; edges follow dependsOn. */
  async function renderPipeline(pipelineId) {
    const p = await api(`/api/pipelines/${encodeURIComponent(pipelineId)}`);
    $('#pipeline-card').hidden = false;
    $('#pipeline-summary').textContent = `root ${p.root} · ${p.runs.length} runs · ${p.isFinished ? 'finished' : 'running'}`;
    const depth = new Map();
    const byAgent = new Map(p.runs.map((r) => [r.agent, r]));
    const depthOf = (agent) => {
      if (depth.has(agent)) return depth.get(agent);
      const run = byAgent.get(agent);
      const d = run?.dependsOn.length ? 1 + Math.max(...run.dependsOn.map(depthOf)) : 0;
      depth.set(agent, d);
      return d;
    };
    const layers = [];
    for (const r of p.runs) {
      const d = depthOf(r.agent);
      layers[d] ||= [];
      layers[d].push(r);
    }
    const NODE_W = 190;
    const NODE_H = 46;
    const GAP_X = 70;
    const GAP_Y = 18;
    const pos = new Map();
    // forEach, not for/of: it skips a depth no run of this pipeline has.
    layers.forEach((runs, x) => {
      for (const [y, r] of runs.entries()) pos.set(r.agent, { x: 10 + x * (NODE_W + GAP_X), y: 10 + y * (NODE_H + GAP_Y) });
    });
    const width = 20 + layers.length * (NODE_W + GAP_X) - GAP_X;
    const height = 20 + Math.max(...layers.map((l) => l.length)) * (NODE_H + GAP_Y) - GAP_Y;
    const edges = p.runs.flatMap((r) =>
      r.dependsOn.map((d) => {
        const from = pos.get(d);
        const to = pos.get(r.agent);
        const x1 = from.x + NODE_W;
        const y1 = from.y + NODE_H / 2;
        const x2 = to.x;
        const y2 = to.y + NODE_H / 2;
        return `<path class="edge" d="M${x1} ${y1} C${x1 + GAP_X / 2} ${y1} ${x2 - GAP_X / 2} ${y2} ${x2} ${y2}"/>`;
      }),
    );
    const nodes = p.runs.map((r) => {
      const { x, y } = pos.get(r.agent);
      const shown = r.outcome || r.state;
      const cls = outcomeClass(shown === 'failed' ? 'failed' : shown);
      const detail = r.error || (r.reasons || []).join('; ') || '';
      return `<a class="node ${cls}${r.runId === id ? ' current' : ''}" href="/runs/${encodeURIComponent(r.runId)}" data-agent="${esc(r.agent)}" data-state="${esc(shown)}" aria-label="${esc(`${r.agent}: ${shown}`)}">
        <title>${esc(`${r.agent} (${r.runId}): ${shown}${detail ? ` — ${detail}` : ''}`)}</title>
        <rect x="${x}" y="${y}" width="${NODE_W}" height="${NODE_H}"/>
        <text x="${x + 10}" y="${y + 19}">${esc(r.agent)}</text>
        <text class="s" x="${x + 10}" y="${y + 36}">${esc(shown)}${r.finishedAt && r.startedAt ? ` · ${ms(Date.parse(r.finishedAt) - Date.parse(r.startedAt))}` : ''}</text>
      </a>`;
    });
    $('#pipeline-graph').innerHTML =
      `<svg width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="group" aria-label="pipeline graph">${edges.join('')}${nodes.join('')}</svg>`;
  }

  async function act(button, run) {
    const routes = {
      retry: [`/api/dlq/${encodeURIComponent(id)}/retry`, '{}', `run ${id} retried`],
      cancel: [`/api/runs/${encodeURIComponent(id)}/cancel`, '{}', `run ${id} cancelled`],
      again: [`/api/agents/${encodeURIComponent(run.agent)}/run`, JSON.stringify(run.data === null ? {} : { data: run.data }), 'new run queued'],
    };
    const [path, body, done] = routes[button.dataset.action];
    button.disabled = true;
    try {
      const answer = await api(path, { method: 'POST', body });
      if (answer.runId) {
        toast(`${done}: ${answer.runId}`);
        setTimeout(() => (location.href = `/runs/${encodeURIComponent(answer.runId)}`), 600);
      } else toast(done);
    } catch (err) {
      toast(err.message, true);
    } finally {
      button.disabled = false;
      setTimeout(load, 400);
    }
  }

  let current = null;
  async function load() {
    current = await api(`/api/runs/${encodeURIComponent(id)}`);
    renderRun(current);
    await Promise.all([renderLogs(), current.pipelineId ? renderPipeline(current.pipelineId).catch(() => undefined) : undefined]);
  }

  document.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-action]');
    if (button && !button.disabled && current) act(button, current);
  });

  (async () => {
    await WP.start();
    try {
      await load();
    } catch (err) {
      $('#run-title').textContent = `run ${id}`;
      $('#outcome').innerHTML = `<div class="empty" id="page-error">${esc(err.message)}</div>`;
      return;
    }
    // A run not ended yet is followed until it ends.
    const timer = setInterval(async () => {
      if (!current || current.state === 'completed' || current.state === 'failed') return clearInterval(timer);
      await load().catch(() => undefined);
    }, 2000);
  })();
})();
