// Plain SVG charts for the agent page: stacked outcome counts and p50/p95/p99 lines. Drawn as markup
// (no library, no CDN): the page's Content Security Policy allows only this server's scripts.
'use strict';

// biome-ignore lint/correctness/noUnusedVariables: a classic script's global, read by agent.js
const Charts = (() => {
  const W = 1000;
  const H = 170;
  const PAD = { left: 44, right: 8, top: 10, bottom: 22 };
  const OUTCOMES = [
    ['success', 'var(--ok)', 'ok'],
    ['failure', 'var(--bad)', 'failed'],
    ['skipped', 'var(--warn)', 'skipped'],
    ['cancelled', 'var(--idle)', 'cancelled'],
  ];
  const LINES = [
    ['p50', '#9db4ff'],
    ['p95', 'var(--warn)'],
    ['p99', 'var(--bad)'],
  ];
  const esc = (v) => String(v).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
  const label = (iso, step) => {
    const d = new Date(iso);
    return step === 'minute'
      ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', hour12: false })
      : d.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', hour12: false });
  };
  const fmtMs = (v) => (v >= 1000 ? `${(v / 1000).toFixed(v >= 10000 ? 0 : 1)}s` : `${Math.round(v)}ms`);

  function frame(kind, points, step, maxLabel, body, extra) {
    const first = points[0];
    const last = points[points.length - 1];
    return `<svg class="chart" data-chart="${kind}" ${extra} viewBox="0 0 ${W} ${H}" role="img" aria-label="${kind} ${step === 'minute' ? 'per minute' : 'per hour'}">
      <line class="axis" x1="${PAD.left}" y1="${H - PAD.bottom}" x2="${W - PAD.right}" y2="${H - PAD.bottom}"/>
      <line class="grid" x1="${PAD.left}" y1="${PAD.top}" x2="${W - PAD.right}" y2="${PAD.top}"/>
      <text class="tick" x="${PAD.left - 4}" y="${PAD.top + 4}" text-anchor="end">${esc(maxLabel)}</text>
      <text class="tick" x="${PAD.left - 4}" y="${H - PAD.bottom}" text-anchor="end">0</text>
      ${first ? `<text class="tick" x="${PAD.left}" y="${H - 6}">${esc(label(first.at, step))}</text>` : ''}
      ${last ? `<text class="tick" x="${W - PAD.right}" y="${H - 6}" text-anchor="end">${esc(label(last.at, step))}</text>` : ''}
      ${body}
    </svg>`;
  }

  /** Stacked bars of outcome counts; each bar's <title> names its interval and counts. */
  function outcomes(points, step) {
    const totals = points.map((p) => OUTCOMES.reduce((n, [k]) => n + p[k], 0));
    const max = Math.max(1, ...totals);
    const slot = (W - PAD.left - PAD.right) / points.length;
    const plotH = H - PAD.top - PAD.bottom;
    let bars = '';
    points.forEach((p, i) => {
      if (totals[i] === 0) return;
      let y = H - PAD.bottom;
      const x = PAD.left + i * slot + slot * 0.12;
      const title = `${label(p.at, step)}: ${OUTCOMES.filter(([k]) => p[k])
        .map(([k, , name]) => `${p[k]} ${name}`)
        .join(', ')}`;
      bars += `<g class="bar"><title>${esc(title)}</title>`;
      for (const [k, color] of OUTCOMES) {
        if (!p[k]) continue;
        const h = (p[k] / max) * plotH;
        y -= h;
        bars += `<rect class="${k}" x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${Math.max(1, slot * 0.76).toFixed(1)}" height="${h.toFixed(1)}" fill="${color}"/>`;
      }
      bars += '</g>';
    });
    const total = totals.reduce((a, b) => a + b, 0);
    return frame('outcomes', points, step, String(max), bars, `data-total="${total}" data-failures="${points.reduce((n, p) => n + p.failure, 0)}"`);
  }

  /** p50/p95/p99 lines; an interval without executed runs breaks the line. */
  function durations(points, step) {
    const values = points.flatMap((p) => LINES.map(([k]) => p[k]).filter((v) => v !== null));
    const max = Math.max(1, ...values);
    const slot = (W - PAD.left - PAD.right) / points.length;
    const plotH = H - PAD.top - PAD.bottom;
    let body = '';
    for (const [k, color] of LINES) {
      let d = '';
      let isDrawing = false;
      points.forEach((p, i) => {
        if (p[k] === null) {
          isDrawing = false;
          return;
        }
        const x = PAD.left + i * slot + slot / 2;
        const y = H - PAD.bottom - (p[k] / max) * plotH;
        d += `${isDrawing ? 'L' : 'M'}${x.toFixed(1)} ${y.toFixed(1)} `;
        isDrawing = true;
      });
      if (d) body += `<path class="line ${k}" d="${d.trim()}" stroke="${color}"/>`;
      // Lone points (one busy interval between quiet ones) would not show as a line.
      points.forEach((p, i) => {
        if (p[k] === null) return;
        const x = PAD.left + i * slot + slot / 2;
        const y = H - PAD.bottom - (p[k] / max) * plotH;
        body += `<circle class="dot ${k}" cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="2" fill="${color}"><title>${esc(`${label(p.at, step)} ${k} ${fmtMs(p[k])}`)}</title></circle>`;
      });
    }
    return frame('durations', points, step, fmtMs(max), body, `data-samples="${points.filter((p) => p.p50 !== null).length}"`);
  }

  const legend = (items) => `<div class="legend">${items.map(([k, color, name]) => `<span><i style="background:${color}"></i>${esc(name || k)}</span>`).join('')}</div>`;

  return { outcomes, durations, outcomeLegend: () => legend(OUTCOMES), durationLegend: () => legend(LINES) };
})();
