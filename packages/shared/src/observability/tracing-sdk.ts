import { DiagLogLevel, ROOT_CONTEXT, SpanKind, context, diag, propagation, trace, type Context, type DiagLogger } from '@opentelemetry/api';
import { detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources';
import { OTLPTraceExporter as JsonTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as ProtobufTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { BatchSpanProcessor, type ReadableSpan, type Span, type SpanExporter, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import type { Telemetry } from 'bullmq';
import { BullMQOtel } from 'bullmq-otel';
import type { Logger } from 'pino';
import type { StartTracingOptions, Tracing } from './tracing.js';

/**
 * The OpenTelemetry SDK as the processes run it. Only tracing.ts imports this module, and only
 * when tracing is on: everything imported here stays unloaded otherwise.
 */

/** The instrumentation scope of our own spans. */
export const TRACER_NAME = 'werkpilot';

/**
 * Attribute values longer than this are cut unless OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT or
 * OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT says otherwise. BullMQ puts each job's JSON result on its
 * `process` span, and a run may return up to 1 MiB: unbounded, one large result would travel in
 * every export of its span.
 */
const DEFAULT_ATTRIBUTE_VALUE_LENGTH_LIMIT = 4096;

export function startSdk({ settings, defaultServiceName, log, instanceId }: StartTracingOptions): Tracing & { serviceName: string } {
  const sdkLog = log.child({ component: 'tracing' });
  diag.setLogger(throttledDiagLogger(sdkLog), DiagLogLevel.WARN);
  const serviceName = settings.serviceName ?? defaultServiceName;
  // OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME (envDetector) override these defaults.
  const resource = resourceFromAttributes({
    'service.name': serviceName,
    ...(instanceId !== undefined ? { 'service.instance.id': instanceId } : {}),
  }).merge(detectResources({ detectors: [envDetector] }));
  const hasLengthLimit = ['OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT', 'OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT'].some((name) => process.env[name]);
  const provider = new NodeTracerProvider({
    resource,
    spanProcessors: [withoutQueueMaintenance(new BatchSpanProcessor(createExporter(settings.protocol, settings.endpoint)))],
    ...(hasLengthLimit ? {} : { spanLimits: { attributeValueLengthLimit: DEFAULT_ATTRIBUTE_VALUE_LENGTH_LIMIT } }),
  });
  // Global: the AsyncLocalStorage context manager and the W3C trace-context propagator, which
  // bullmq-otel uses to carry a trigger's context to the worker in each job's options.
  provider.register();
  const otel = new BullMQOtel({ tracerName: 'bullmq' });
  const telemetry: Telemetry<Context> = {
    tracer: otel.tracer,
    contextManager: {
      with: (ctx, fn) => otel.contextManager.with(ctx, fn),
      active: () => otel.contextManager.active(),
      getMetadata: (ctx) => otel.contextManager.getMetadata(ctx),
      fromMetadata: (active, metadata) => otel.contextManager.fromMetadata(active, metadata),
      // bullmq-otel 2.0 lacks it: without it BullMQ runs its stalled-job checker inside the span of
      // the call that started it, one trace growing for the worker's life (bullmq#4731).
      root: () => ROOT_CONTEXT,
    },
  };
  let isShutDown = false;
  return {
    telemetry,
    tracer: trace.getTracer(TRACER_NAME),
    settings,
    serviceName,
    flush: () => provider.forceFlush(),
    async shutdown() {
      if (isShutDown) return;
      isShutDown = true;
      await provider.shutdown().catch((err: unknown) => sdkLog.warn({ err }, 'could not export the last spans'));
      trace.disable();
      context.disable();
      propagation.disable();
      diag.disable();
    },
  };
}

function createExporter(protocol: StartTracingOptions['settings']['protocol'], url: string): SpanExporter {
  // Both read OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT and _COMPRESSION (and their _TRACES_ forms) themselves.
  return protocol === 'http/json' ? new JsonTraceExporter({ url }) : new ProtobufTraceExporter({ url });
}

/**
 * Drops the traces BullMQ starts by itself with no job behind them: a worker's periodic stalled
 * check, its start-up, and each fetch that came back empty — a root span every few seconds per
 * worker that says nothing about any run. A job's own spans (add, process, and the fetch that
 * brought it) keep their parent and pass.
 */
function withoutQueueMaintenance(next: SpanProcessor): SpanProcessor {
  return {
    onStart: (span: Span, parentContext: Context) => next.onStart(span, parentContext),
    onEnd: (span: ReadableSpan) => {
      if (isQueueMaintenance(span)) return;
      next.onEnd(span);
    },
    forceFlush: () => next.forceFlush(),
    shutdown: () => next.shutdown(),
  };
}

function isQueueMaintenance(span: ReadableSpan): boolean {
  return span.instrumentationScope.name === 'bullmq' && span.kind === SpanKind.INTERNAL && span.parentSpanContext === undefined;
}

/** How often at most the SDK's own warnings (an unreachable collector, a rejected export) are logged. */
const DIAG_LOG_INTERVAL_MS = 60_000;

/**
 * The SDK's diagnostics (export failures, mostly) as our log lines, at most one a minute: a
 * collector that is down fails every export (each 5 s by default) and would flood the log.
 */
function throttledDiagLogger(log: Logger): DiagLogger {
  let lastAt = 0;
  let suppressed = 0;
  const write =
    (level: 'warn' | 'error') =>
    (message: string, ...args: unknown[]) => {
      const now = Date.now();
      if (now - lastAt < DIAG_LOG_INTERVAL_MS) {
        suppressed += 1;
        return;
      }
      lastAt = now;
      const text = [message, ...args].map(readable).join(' ');
      log[level]({ ...(suppressed > 0 ? { suppressedSince: suppressed } : {}) }, `tracing: ${text} (spans are dropped meanwhile; runs are not affected)`);
      suppressed = 0;
    };
  const ignore = () => undefined;
  return { error: write('warn'), warn: write('warn'), info: ignore, debug: ignore, verbose: ignore };
}

/** The SDK reports a failed export as the error serialised to JSON, stack and all: its message is what a person needs. */
function readable(value: unknown): string {
  if (value instanceof Error) return value.message;
  const text = String(value);
  if (!text.startsWith('{')) return text;
  try {
    const parsed = JSON.parse(text) as { message?: unknown };
    return typeof parsed.message === 'string' ? parsed.message : text;
  } catch {
    return text;
  }
}
