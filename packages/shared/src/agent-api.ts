/**
 * What an agent author imports: `@werkpilot/shared/agent`. Everything else the package exports is
 * the orchestrator's own machinery, which may change between releases without notice; this
 * surface is what docs/agents.md describes.
 */
export {
  defineAgent,
  defineLimiter,
  type AgentContext,
  type AgentDefinition,
  type AgentLogger,
  type AgentSchedule,
  type CatchUpPolicy,
  type ConcurrencyControl,
  type ControlKey,
  type HealthCheckResult,
  type Limiter,
  type LimiterDefinition,
  type LimiterUse,
  type OverlapPolicy,
  type Priority,
  type RateLimit,
  type RetryPolicy,
  type TopicHandler,
} from './agents/agent.js';
/** What `ctx.publish` and `ctx.request` reject with, for agents that tell them apart. */
export { PublishPayloadError, RemoteRequestError, RequestPayloadError, RequestShutdownError, RequestTimeoutError } from './process/errors.js';
