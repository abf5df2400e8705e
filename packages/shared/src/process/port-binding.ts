import { createServer, type RequestListener, type Server } from 'node:http';
import { ConfigError } from './errors.js';

/** The port a process was told to serve on cannot be had; nothing else was started. */
export class PortUnavailableError extends ConfigError {}

export interface BoundPort {
  server: Server;
  /** The port actually bound (the ephemeral one when 0 was asked for). */
  port: number;
  /** Hands requests to `handler` from now on (until then they answer 503 "starting"). */
  serve(handler: RequestListener): void;
  /** Stops listening and ends every connection, idle or not (live event streams never end by themselves). */
  close(): Promise<void>;
}

/**
 * Binds `port` before the process takes any work, so a process that cannot serve never fetches a
 * job or takes the leader lease (a port clash found after that would exit with runs stalled). Until
 * `serve` is called, every request answers 503 `{ "error": "starting" }`.
 *
 * Throws PortUnavailableError (exit code 2) with one line naming the port and the variable that
 * set it: `WORKER_HTTP_PORT=3002: port 3002 is already in use (EADDRINUSE); ...`.
 */
export function bindPort({ port, variable }: { port: number; variable: string }): Promise<BoundPort> {
  const starting: RequestListener = (_req, res) => {
    res.writeHead(503, { 'content-type': 'application/json; charset=utf-8', 'retry-after': '1' }).end('{"error":"starting"}');
  };
  const server = createServer(starting);
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(new PortUnavailableError(describeListenError(err, port, variable))));
    server.listen(port, () => {
      const address = server.address();
      resolve({
        server,
        port: typeof address === 'object' && address ? address.port : port,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
        serve(handler) {
          server.off('request', starting);
          server.on('request', handler);
        },
      });
    });
  });
}

function describeListenError(err: NodeJS.ErrnoException, port: number, variable: string): string {
  const head = `${variable}=${port}:`;
  if (err.code === 'EADDRINUSE') return `${head} port ${port} is already in use (EADDRINUSE); stop the process that holds it or set ${variable} to a free port`;
  if (err.code === 'EACCES') return `${head} not allowed to listen on port ${port} (EACCES); use a port above 1023 or set ${variable} to one`;
  return `${head} cannot listen on port ${port} (${err.code ?? err.message}); set ${variable} to a port this process may use`;
}
