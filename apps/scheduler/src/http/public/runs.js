// Runs page (/runs): run search over GET /api/runs; the filters live in the address, so a search is a link.
'use strict';

(() => {
  const { $, esc, api, toast, ms, ago, outcomeOf, outcomeClass, runLink, agentLink } = WP;
  const FIELDS = ['agent', 'state', 'trigger', 'pipeline', 'since', 'until', 'q'];
  let next = null;
  let shown = 0;

  function filtersFromForm() {
    const form = new FormData($('#search'));
    const params = new URLSearchParams();
    for (const f of FIELDS) {
      const v = String(form.get(f) || '').trim();
      if (v) params.set(f, v);
    }
    return params;
  }

  function render(runs, append) {
    const rows = runs.map((r) => {
      const o = outcomeOf(r);
      return `<tr data-run="${esc(r.id)}"><td>${runLink(r.id)}</td><td>${agentLink(r.agent)}</td><td><span class="badge ${outcomeClass(o)}">${esc(o)}</span></td>
        <td>${esc(r.trigger || '—')}</td><td class="num">${ms(r.timings.durationMs)}</td><td class="num">${esc(r.attempts.made)}/${esc(r.attempts.max)}</td>
        <td class="nowrap">${esc(ago(r.timings.finishedAt || r.timings.queuedAt))}</td><td class="sig">${esc(r.error || '')}</td></tr>`;
    });
    const body = $('#results tbody');
    if (append) body.insertAdjacentHTML('beforeend', rows.join(''));
    else body.innerHTML = rows.join('') || '<tr><td colspan="8" class="empty">No run matches.</td></tr>';
  }

  async function search(params, append) {
    const query = new URLSearchParams(params);
    if (append && next) query.set('cursor', next);
    try {
      const page = await api(`/api/runs?${query}`);
      next = page.next;
      shown = append ? shown + page.runs.length : page.runs.length;
      render(page.runs, append);
      $('#results-summary').textContent = `${shown} run${shown === 1 ? '' : 's'}${next ? ' · more may match' : ''}`;
      $('#next-page').hidden = !next;
    } catch (err) {
      toast(err.message, true);
      $('#results-summary').textContent = err.message;
    }
  }

  $('#search').addEventListener('submit', (event) => {
    event.preventDefault();
    const params = filtersFromForm();
    history.replaceState(null, '', `/runs${params.size ? `?${params}` : ''}`);
    search(params, false);
  });
  $('#next-page').addEventListener('click', () => search(filtersFromForm(), true));

  (async () => {
    await WP.start();
    await WP.prefillFilters($('#search'), FIELDS);
    search(filtersFromForm(), false);
  })();
})();
