// DLQ by cause (/dlq): groups of dead-lettered runs by agent and error signature; replay or delete a
// group or the filtered runs, after a preview of how many and a confirmation.
'use strict';

(() => {
  const { $, esc, api, toast, ago, agentLink, guard, confirmAction } = WP;
  const FIELDS = ['agent', 'since', 'until', 'match'];

  function filters() {
    const form = new FormData($('#dlq-filter'));
    const selection = {};
    for (const f of FIELDS) {
      const v = String(form.get(f) || '').trim();
      if (v) selection[f] = v;
    }
    return selection;
  }

  async function load() {
    const selection = filters();
    try {
      const answer = await api(`/api/dlq/groups?${new URLSearchParams(selection)}`);
      const g = guard();
      $('#dlq-total').textContent = `${answer.total} dead-lettered run${answer.total === 1 ? '' : 's'}${answer.scanned < answer.total ? ` · grouped the newest ${answer.scanned}` : ''}`;
      const runs = answer.groups.reduce((n, group) => n + group.count, 0);
      $('#groups-summary').textContent = `${answer.groups.length} group${answer.groups.length === 1 ? '' : 's'} · ${runs} run${runs === 1 ? '' : 's'}`;
      $('#groups tbody').innerHTML = answer.groups.length
        ? answer.groups
            .map(
              (group) => `<tr data-group="${esc(group.id)}">
                <td>${agentLink(group.agent)}</td>
                <td><div class="sig" title="${esc(group.example)}">${esc(group.signature)}</div><div class="agent-meta">e.g. <a href="/runs/${encodeURIComponent(group.runIds[0])}">${esc(group.runIds[0])}</a></div></td>
                <td class="num" data-count>${group.count}</td>
                <td class="nowrap">${esc(ago(group.firstSeen))}</td><td class="nowrap">${esc(ago(group.lastSeen))}</td>
                <td><div class="actions">
                  <button class="btn primary" data-action="replay" data-group="${esc(group.id)}"${g}>Replay ${group.count}</button>
                  <button class="btn" data-action="delete" data-group="${esc(group.id)}"${g}>Delete</button>
                </div></td></tr>`,
            )
            .join('')
        : '<tr><td colspan="6" class="empty">No dead-lettered run matches.</td></tr>';
      const hasFilter = Object.keys(selection).length > 0;
      for (const b of document.querySelectorAll('[data-bulk]')) {
        b.disabled = !WP.session.canMutate || !hasFilter;
        b.title = !WP.session.canMutate ? WP.READ_ONLY : hasFilter ? `${b.dataset.bulk} every run the filter picks` : 'set a filter first (agent, time range or error text)';
      }
    } catch (err) {
      toast(err.message, true);
    }
  }

  /** Preview → confirm → act with the preview's count, so exactly the confirmed runs are touched. */
  async function bulk(action, selection, button) {
    button.disabled = true;
    try {
      const preview = await api(`/api/dlq/selection?${new URLSearchParams(selection)}`);
      if (preview.count === 0) return toast('No dead-lettered run matches any more.');
      const what = Object.entries(selection)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ');
      const isConfirmed = await confirmAction(
        `${action === 'replay' ? 'Replay' : 'Delete'} ${preview.count} dead-lettered run${preview.count === 1 ? '' : 's'} (${what})?${action === 'replay' ? ' Each runs again with fresh attempts.' : ' Their records are gone for good.'}`,
        `${action === 'replay' ? 'Replay' : 'Delete'} ${preview.count}`,
      );
      if (!isConfirmed) return;
      const answer = await api(`/api/dlq/${action}`, { method: 'POST', body: JSON.stringify({ ...selection, expectCount: preview.count }) });
      toast(`${action === 'replay' ? 'replayed' : 'deleted'} ${answer.replayed ?? answer.deleted} run${(answer.replayed ?? answer.deleted) === 1 ? '' : 's'}`);
    } catch (err) {
      toast(err.message, true);
    } finally {
      button.disabled = false;
      load();
    }
  }

  document.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-action], button[data-bulk]');
    if (!button || button.disabled) return;
    if (button.dataset.bulk) bulk(button.dataset.bulk, filters(), button);
    else bulk(button.dataset.action, { group: button.dataset.group }, button);
  });
  $('#dlq-filter').addEventListener('submit', (event) => {
    event.preventDefault();
    const selection = filters();
    history.replaceState(null, '', `/dlq${Object.keys(selection).length ? `?${new URLSearchParams(selection)}` : ''}`);
    load();
  });

  (async () => {
    await WP.start();
    await WP.prefillFilters($('#dlq-filter'), FIELDS);
    await load();
    setInterval(load, 5000);
  })();
})();
