import type { ErrorRequestHandler, RequestHandler } from 'express';
import type { Logger } from '@werkpilot/shared';

/**
 * The one place that maps typed errors to HTTP statuses. Anything unknown is a 500 whose body says
 * only where to look; no stack trace ever reaches a client.
 */
const STATUS_BY_ERROR: Record<string, number> = {
  InvalidInputError: 400,
  RequestPayloadError: 400,
  AgentNotFoundError: 404,
  RunNotFoundError: 404,
  ReportNotFoundError: 404,
  RunFinishedError: 409,
  IdempotencyConflictError: 409,
  SelectionChangedError: 409,
  RunCancelTimeoutError: 504,
};

export function errorHandler(log: Logger): ErrorRequestHandler {
  return (err, req, res, _next) => {
    const named = typeof err?.name === 'string' ? STATUS_BY_ERROR[err.name] : undefined;
    // body-parser and express mark their own client errors (bad JSON, too large, bad URI) with a 4xx status.
    const own = typeof err?.status === 'number' && err.status >= 400 && err.status < 500 ? err.status : undefined;
    const status = named ?? own ?? 500;
    if (status === 500) log.error({ err, method: req.method, path: req.path }, 'request failed');
    if (res.headersSent) return;
    const message = status === 500 ? 'internal error; see the scheduler log' : firstLine(String(err?.message ?? 'bad request'));
    res.status(status).json({ error: status === 400 && err?.type === 'entity.parse.failed' ? `malformed JSON body: ${message}` : message });
  };
}

export const notFound: RequestHandler = (req, res) => {
  res.status(404).json({ error: `not found: ${req.method} ${req.path}` });
};

function firstLine(text: string): string {
  return (text.split('\n')[0] ?? text).slice(0, 500);
}
