import { Router, type Request, type Response } from 'express';
import { wantsPrometheusFormat, type PreparedBody, type SnapshotService } from '@werkpilot/shared';

export interface MetricsRoutesDeps {
  snapshots: Pick<SnapshotService, 'current'>;
  /**
   * Whether a request may see the complete JSON snapshot: credentials sent, or none configured.
   * Otherwise the open `/metrics` answers with every figure but without run data, stack traces and
   * host details (snapshot-redaction.ts).
   */
  canSeeEverything: (req: Request) => boolean;
}

/**
 * `/metrics` is content-negotiated so old and new clients both work: Prometheus text when `Accept`
 * names text/plain or application/openmetrics-text (Prometheus always does) or with
 * `?format=prometheus`; otherwise the predecessor's JSON snapshot, so
 * `curl :3001/metrics | jq '.deadLetterQueue'` keeps working. `/api/metrics` is always JSON.
 *
 * Every answer comes from the latest cluster snapshot (snapshot-service.ts), whose bodies are
 * prepared once per build: a request costs no Redis command and no serialisation, only the send.
 */
export function metricsRoutes({ snapshots, canSeeEverything }: MetricsRoutesDeps): Router {
  const router = Router();
  router.get('/metrics', async (req, res) => {
    res.vary('Accept');
    const snapshot = await snapshots.current();
    if (wantsPrometheusFormat(req.headers.accept, req.query.format)) {
      await send(req, res, await snapshot.prometheus());
      return;
    }
    res.vary('Authorization');
    await send(req, res, await snapshot.json(canSeeEverything(req) ? 'full' : 'anonymous'));
  });
  router.get('/api/metrics', async (req, res) => {
    await send(req, res, await (await snapshots.current()).json('full'));
  });
  return router;
}

/**
 * Sends a prepared body: 304 when the client has this build's body already (ETag), gzip when the
 * client asks for it by name (plain `curl` sends no Accept-Encoding and gets plain text).
 */
async function send(req: Request, res: Response, body: PreparedBody): Promise<void> {
  res.vary('Accept-Encoding');
  res.setHeader('Content-Type', body.contentType);
  res.setHeader('ETag', body.etag);
  res.setHeader('Cache-Control', 'no-cache');
  if (req.fresh) {
    res.status(304).end();
    return;
  }
  const isGzip = req.headers['accept-encoding'] !== undefined && req.acceptsEncodings('gzip', 'identity') === 'gzip';
  const encoded = isGzip ? await body.gzipped() : body;
  if (isGzip) res.setHeader('Content-Encoding', 'gzip');
  res.setHeader('Content-Length', encoded.byteLength);
  for (const chunk of encoded.chunks) res.write(chunk);
  res.end();
}
