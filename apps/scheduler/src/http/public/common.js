// Helpers shared by every dashboard page (overview, agent, run, runs, dlq). Vanilla JS, no build step.
'use strict';

const WP = (() => {
  const $ = (selector, root = document) => root.querySelector(selector);
  const esc = (value) => String(value ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
  const READ_ONLY = 'read-only: configure dashboard credentials (DASHBOARD_TOKEN or DASHBOARD_USER/DASHBOARD_PASSWORD) to enable actions';
  const session = { canMutate: false };

  async function api(path, options = {}) {
    const res = await fetch(path, { credentials: 'same-origin', headers: { Accept: 'application/json', 'Content-Type': 'application/json' }, ...options });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw Object.assign(new Error(body.error || `${res.status} ${res.statusText}`), { status: res.status });
    return body;
  }

  function toast(message, isError = false) {
    const el = $('#toast');
    el.textContent = message;
    el.className = `toast show${isError ? ' bad' : ''}`;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => (el.className = 'toast'), 4000);
  }

  function ago(iso) {
    if (!iso) return '—';
    const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (s < 60) return `${Math.round(s)} s ago`;
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${Math.round(s / 3600)} h ago`;
    return new Date(iso).toLocaleString();
  }
  const ms = (v) => (v === null || v === undefined ? '—' : v >= 1000 ? `${(v / 1000).toFixed(v >= 10000 ? 0 : 1)} s` : `${v} ms`);
  const time = (iso) => (iso ? new Date(iso).toLocaleString([], { hour12: false }) : '—');
  const healthClass = (h) => ({ healthy: 'ok', degraded: 'warn', unhealthy: 'bad' })[h] || 'idle';
  const circuitClass = (c) => ({ closed: 'ok', 'half-open': 'warn', open: 'bad' })[c] || 'idle';

  /** success, failed, skipped, cancelled, or the BullMQ state of a run not ended yet. */
  function outcomeOf(run) {
    if (run.state === 'failed') return 'failed';
    if (run.state !== 'completed') return run.state;
    const outcome = run.result?.outcome;
    return outcome === 'skipped' || outcome === 'cancelled' ? outcome : 'success';
  }
  const outcomeClass = (o) => ({ success: 'ok', failed: 'bad', skipped: 'warn', cancelled: 'warn', active: 'warn' })[o] || 'idle';
  const runLink = (id) => `<a class="mono" href="/runs/${encodeURIComponent(id)}">${esc(id)}</a>`;
  const agentLink = (name) => `<a class="agent-name" href="/agents/${encodeURIComponent(name)}">${esc(name)}</a>`;

  /** ` disabled title="…"` for an operator action in read-only mode, so every page shows why. */
  const guard = () => (session.canMutate ? '' : ` disabled title="${esc(READ_ONLY)}"`);

  /** Reads the session, fills the mode badge; call before rendering actions. */
  async function start() {
    const s = await api('/api/session').catch(() => ({ canMutate: false, authMode: 'none' }));
    session.canMutate = Boolean(s.canMutate);
    const mode = $('#mode');
    if (mode) {
      mode.textContent = session.canMutate ? 'operator' : 'read-only';
      mode.className = `mode${session.canMutate ? ' rw' : ''}`;
      mode.title = session.canMutate ? `signed in (${s.authMode})` : READ_ONLY;
    }
    return session;
  }

  /**
   * Asks to confirm in the page's <dialog> (keyboard: Tab between the buttons, Escape cancels).
   * Resolves true only when the confirm button was chosen.
   */
  function confirmAction(message, confirmLabel) {
    const dialog = $('#confirm');
    $('#confirm-text').textContent = message;
    $('#confirm-ok').textContent = confirmLabel;
    return new Promise((resolve) => {
      dialog.returnValue = '';
      dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
      dialog.showModal();
      $('#confirm-cancel').focus();
    });
  }

  const json = (value) => (value === undefined || value === null ? '—' : JSON.stringify(value, null, 2));

  /** Fills a filter form: the agent choices from the API, and each field from the page's URL. */
  async function prefillFilters(form, fields) {
    const { agents } = await api('/api/agents').catch(() => ({ agents: [] }));
    $('#f-agent', form).insertAdjacentHTML('beforeend', agents.map((a) => `<option>${esc(a.name)}</option>`).join(''));
    const params = new URLSearchParams(location.search);
    for (const f of fields) {
      const input = $(`[name="${f}"]`, form);
      if (input && params.has(f)) input.value = params.get(f);
    }
  }

  return { $, esc, api, toast, ago, ms, time, healthClass, circuitClass, outcomeOf, outcomeClass, runLink, agentLink, guard, start, confirmAction, json, prefillFilters, session, READ_ONLY };
})();

document.addEventListener('DOMContentLoaded', () => {
  const dialog = WP.$('#confirm');
  if (!dialog) return;
  WP.$('#confirm-ok').addEventListener('click', () => dialog.close('ok'));
  WP.$('#confirm-cancel').addEventListener('click', () => dialog.close('cancel'));
});
