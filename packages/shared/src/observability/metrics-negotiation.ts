/**
 * Content negotiation of `/metrics` (both apps): the Prometheus text format or the JSON snapshot.
 */

/** Media types a Prometheus scraper asks for; anything else gets the JSON snapshot. */
const PROMETHEUS_MEDIA_TYPES = ['text/plain', 'application/openmetrics-text'];

/**
 * Whether a `/metrics` request wants the Prometheus text format: `?format=prometheus`, or an
 * `Accept` header naming text/plain or application/openmetrics-text (Prometheus always sends
 * one). Plain `curl` (`*\/*`), browsers and `application/json` get the JSON snapshot.
 */
export function wantsPrometheusFormat(accept: string | undefined, format: unknown): boolean {
  if (format === 'prometheus') return true;
  if (format === 'json') return false;
  if (!accept) return false;
  return accept
    .toLowerCase()
    .split(',')
    .some((part) => {
      const [type = '', ...params] = part.split(';').map((s) => s.trim());
      const q = params.find((p) => p.startsWith('q='));
      return PROMETHEUS_MEDIA_TYPES.includes(type) && (q === undefined || Number(q.slice(2)) > 0);
    });
}
