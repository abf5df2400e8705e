import { CliError, EXIT_FAILURE, EXIT_USAGE } from './cli-error.js';

/** Where the API is and how to authenticate, from flags and the environment. */
export interface ApiTarget {
  /** Base URL of a scheduler, e.g. http://localhost:3001. */
  url: string;
  /** Bearer token (DASHBOARD_TOKEN of the server). */
  token?: string | undefined;
  /** Basic credentials (DASHBOARD_USER / DASHBOARD_PASSWORD of the server), used when no token is given. */
  user?: string | undefined;
  password?: string | undefined;
  /** Per-request timeout; streams are exempt. */
  timeoutMs?: number;
}

/** The API answered with an error status; `message` is its `{ "error" }`. */
export class ApiError extends CliError {
  constructor(
    readonly status: number,
    message: string,
  ) {
    // 400 means the input we sent from the command line was invalid: a usage problem.
    super(message, status === 400 ? EXIT_USAGE : EXIT_FAILURE);
  }
}

/**
 * A small client for the scheduler's HTTP API (docs/design.md#http-surface). Every failure
 * becomes a CliError with a one-line message saying what happened and, where it helps, what to do.
 */
export class ApiClient {
  readonly baseUrl: string;
  private readonly authorization: string | undefined;
  private readonly timeoutMs: number;

  constructor(target: ApiTarget) {
    this.baseUrl = normaliseBaseUrl(target.url);
    this.timeoutMs = target.timeoutMs ?? 15_000;
    if (target.token) this.authorization = `Bearer ${target.token}`;
    else if (target.user && target.password) {
      this.authorization = `Basic ${Buffer.from(`${target.user}:${target.password}`).toString('base64')}`;
    }
  }

  get<T>(path: string, query: Record<string, string | number | undefined> = {}): Promise<T> {
    return this.request<T>('GET', withQuery(path, query));
  }

  post<T>(path: string, body?: unknown): Promise<T> {
    return this.request<T>('POST', path, body);
  }

  delete<T>(path: string): Promise<T> {
    return this.request<T>('DELETE', path);
  }

  /** Opens a streaming GET (server-sent events); the caller reads `body` until `signal` aborts. */
  async stream(path: string, signal: AbortSignal): Promise<Response> {
    const res = await this.send('GET', path, undefined, signal, 'text/event-stream');
    if (!res.ok) throw await errorOf(res);
    return res;
  }

  private async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.send(method, path, body, AbortSignal.timeout(this.timeoutMs), 'application/json');
    if (!res.ok) throw await errorOf(res);
    const text = await res.text();
    try {
      return (text === '' ? null : JSON.parse(text)) as T;
    } catch {
      throw new CliError(`${method} ${path} answered ${res.status} with a body that is not JSON; is ${this.baseUrl} a werkpilot scheduler?`);
    }
  }

  private async send(method: string, path: string, body: unknown, signal: AbortSignal, accept: string): Promise<Response> {
    const headers: Record<string, string> = { accept };
    if (this.authorization) headers.authorization = this.authorization;
    if (body !== undefined) headers['content-type'] = 'application/json';
    try {
      return await fetch(`${this.baseUrl}${path}`, {
        method,
        headers,
        signal,
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
    } catch (err) {
      throw new CliError(`cannot reach the werkpilot API at ${this.baseUrl}: ${networkReason(err)} (set --url or WERKPILOT_URL)`);
    }
  }
}

function normaliseBaseUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new CliError(`--url must be an http:// or https:// URL, got ${JSON.stringify(url)}`, EXIT_USAGE);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new CliError(`--url must be an http:// or https:// URL, got ${JSON.stringify(url)}`, EXIT_USAGE);
  }
  return parsed.toString().replace(/\/+$/, '');
}

function withQuery(path: string, query: Record<string, string | number | undefined>): string {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined) params.set(k, String(v));
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

async function errorOf(res: Response): Promise<ApiError> {
  let message = '';
  try {
    const body = (await res.json()) as { error?: unknown };
    if (typeof body?.error === 'string') message = body.error;
  } catch {
    // not JSON: fall back to the status text
  }
  if (!message) message = `${res.status} ${res.statusText || 'error'}`;
  if (res.status === 401) message += " (set WERKPILOT_TOKEN, or --token-file, to the server's DASHBOARD_TOKEN)";
  return new ApiError(res.status, oneLine(message));
}

function networkReason(err: unknown): string {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') return 'no answer in time';
  return e?.cause?.code ?? e?.cause?.message ?? e?.message ?? String(err);
}

/** Collapses a message to one line, so every error the CLI prints is one line. */
export function oneLine(text: string): string {
  return text.trim().replace(/\s*\n\s*/g, '; ');
}
