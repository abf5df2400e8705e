import type { Tracer } from '@opentelemetry/api';
import type { Telemetry } from 'bullmq';
import type { Logger } from 'pino';
import { ConfigError } from '../process/errors.js';

/**
 * OpenTelemetry tracing, on only when an OTLP endpoint is configured with the standard variables
 * (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`). Off, nothing of the SDK
 * is loaded and the run path pays nothing: no BullMQ `telemetry` option, no tracer, no span. On,
 * the SDK (tracing-sdk.ts) is imported at start, so idle processes that do not trace keep its
 * memory (a few MB) to themselves.
 *
 * The exporter, the sampler and the batch processor read their own standard variables
 * (`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_TRACES_SAMPLER`,
 * `OTEL_BSP_SCHEDULE_DELAY`, ...), as they do in every OpenTelemetry SDK.
 */

/** OTLP over HTTP, in the two encodings the specification defines; gRPC is not bundled. */
export const OTLP_PROTOCOLS = ['http/protobuf', 'http/json'] as const;
export type OtlpProtocol = (typeof OTLP_PROTOCOLS)[number];

export interface TracingSettings {
  /** The OTLP/HTTP traces URL spans are sent to (…/v1/traces). */
  endpoint: string;
  protocol: OtlpProtocol;
  /** `service.name` of every span (`OTEL_SERVICE_NAME`); unset, the process role's default. */
  serviceName?: string;
}

/** A started tracer: what BullMQ and our run path use, and how to stop it. */
export interface Tracing {
  /** BullMQ's `telemetry` option (bullmq-otel): its queue spans (add, process, ...). */
  telemetry: Telemetry;
  /** The tracer of our own spans (trigger, gate, wait, run). */
  tracer: Tracer;
  settings: TracingSettings;
  serviceName: string;
  /** Exports what is buffered now (the batch processor otherwise waits up to OTEL_BSP_SCHEDULE_DELAY). */
  flush(): Promise<void>;
  /** Exports what is still buffered and unregisters the SDK (graceful shutdown). */
  shutdown(): Promise<void>;
}

type Env = Record<string, string | undefined>;

/**
 * Reads the tracing variables (loadConfig calls it, so its problems join the others): undefined
 * (tracing off) without an OTLP endpoint, or with `OTEL_SDK_DISABLED=true` or
 * `OTEL_TRACES_EXPORTER=none`. Throws ConfigError for an endpoint that is not an http(s) URL or a
 * protocol this build does not speak, naming the variable.
 */
export function tracingSettings(env: Env): TracingSettings | undefined {
  const value = (name: string) => {
    const raw = env[name]?.trim();
    return raw === undefined || raw === '' ? undefined : raw;
  };
  if (value('OTEL_SDK_DISABLED')?.toLowerCase() === 'true') return undefined;
  if (value('OTEL_TRACES_EXPORTER')?.toLowerCase() === 'none') return undefined;
  const tracesEndpoint = value('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT');
  const baseEndpoint = value('OTEL_EXPORTER_OTLP_ENDPOINT');
  if (tracesEndpoint === undefined && baseEndpoint === undefined) return undefined;

  const problems: string[] = [];
  const exporter = value('OTEL_TRACES_EXPORTER');
  if (exporter !== undefined && exporter.toLowerCase() !== 'otlp') {
    problems.push(`OTEL_TRACES_EXPORTER must be otlp or none, got ${JSON.stringify(exporter)}`);
  }
  // As the specification says: the signal's own endpoint is used as given; the base gets /v1/traces.
  const endpointVariable = tracesEndpoint !== undefined ? 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT' : 'OTEL_EXPORTER_OTLP_ENDPOINT';
  const endpoint = tracesEndpoint ?? `${baseEndpoint!.replace(/\/+$/, '')}/v1/traces`;
  if (!isHttpUrl(endpoint)) {
    problems.push(`${endpointVariable} must be an http:// or https:// URL such as http://otel-collector:4318, got ${JSON.stringify(env[endpointVariable])}`);
  }
  const protocolVariable = value('OTEL_EXPORTER_OTLP_TRACES_PROTOCOL') !== undefined ? 'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL' : 'OTEL_EXPORTER_OTLP_PROTOCOL';
  const protocol = value(protocolVariable) ?? 'http/protobuf';
  if (!(OTLP_PROTOCOLS as readonly string[]).includes(protocol)) {
    problems.push(`${protocolVariable} must be ${OTLP_PROTOCOLS.join(' or ')} (OTLP over HTTP, a collector's port 4318; gRPC is not built in), got ${JSON.stringify(protocol)}`);
  }
  if (problems.length > 0) throw new ConfigError(problems.join('; '));
  const serviceName = value('OTEL_SERVICE_NAME');
  return { endpoint, protocol: protocol as OtlpProtocol, ...(serviceName !== undefined ? { serviceName } : {}) };
}

export interface StartTracingOptions {
  settings: TracingSettings;
  /** `service.name` when OTEL_SERVICE_NAME is unset: `werkpilot-scheduler`, `werkpilot-worker`. */
  defaultServiceName: string;
  log: Logger;
  /** `service.instance.id` of the spans: the worker id, or the scheduler replica's id. */
  instanceId?: string;
}

/**
 * Loads the OpenTelemetry SDK (only now, so a process that does not trace never loads it),
 * registers it globally and exports to `settings.endpoint`. Logs where spans go.
 */
export async function startTracing(options: StartTracingOptions): Promise<Tracing> {
  const { startSdk } = await import('./tracing-sdk.js');
  const tracing = startSdk(options);
  const { endpoint, protocol } = options.settings;
  options.log.info({ endpoint, protocol, serviceName: tracing.serviceName }, 'tracing on: spans go to the OTLP endpoint');
  return tracing;
}

function isHttpUrl(value: string): boolean {
  try {
    const url = new URL(value);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.hostname !== '';
  } catch {
    return false;
  }
}
