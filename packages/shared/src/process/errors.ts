/**
 * Typed errors whose messages tell a person what was wrong and what to do.
 * Processes map `exitCode` to their exit status (2 = bad input or configuration).
 */
export class WerkpilotError extends Error {
  /** Exit code a process should use when this error stops it. */
  readonly exitCode: number = 1;
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** A configuration variable has a value we cannot use. */
export class ConfigError extends WerkpilotError {
  override readonly exitCode = 2;
}

/** The agent registry is invalid; `problems` lists every problem found, not just the first. */
export class RegistryError extends WerkpilotError {
  override readonly exitCode = 2;
  constructor(readonly problems: string[]) {
    super(`the agent registry has ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  }
}

/** An operation named an agent the registry does not know. */
export class AgentNotFoundError extends WerkpilotError {
  /** `elsewhere`: where the agent is when it is not unknown but served by another shard's scheduler. */
  constructor(
    readonly agent: string,
    elsewhere?: string,
  ) {
    super(elsewhere ? `agent ${agent} is not served here: ${elsewhere}` : `unknown agent ${agent}`);
  }
}

/** A run was asked for that does not exist (or has been removed by retention). */
export class RunNotFoundError extends WerkpilotError {
  constructor(readonly runId: string) {
    super(`unknown run ${runId}`);
  }
}

/** Input to an operation was malformed (bad JSON data, wrong type, ...). */
export class InvalidInputError extends WerkpilotError {
  override readonly exitCode = 2;
}

/** No Redis could be found or started. */
export class RedisUnavailableError extends WerkpilotError {
  override readonly exitCode = 2;
}

/** A run exceeded its agent's `timeoutMs`. */
export class RunTimeoutError extends WerkpilotError {
  constructor(readonly timeoutMs: number) {
    super(`timeout after ${timeoutMs} ms`);
  }
}

/** No worker hosting `agent` answered a request within `timeoutMs` (none alive, no `onRequest`, or too slow). */
export class RequestTimeoutError extends WerkpilotError {
  constructor(
    readonly agent: string,
    readonly timeoutMs: number,
  ) {
    super(`request to agent ${agent} timed out after ${timeoutMs} ms: no worker hosting ${agent} answered (is one running, and does ${agent} define onRequest?)`);
  }
}

/** The responding agent's `onRequest` threw; the message is the responder's own. */
export class RemoteRequestError extends WerkpilotError {
  constructor(
    readonly agent: string,
    message: string,
    /** The `name` of the error the responder threw (`TypeError`, ...). */
    readonly remoteName: string,
  ) {
    super(message);
  }
}

/** A request or its result is not JSON-serialisable or larger than the limit; nothing was sent. */
export class RequestPayloadError extends InvalidInputError {}

/** The requesting process is shutting down; its pending requests end with this. */
export class RequestShutdownError extends WerkpilotError {
  constructor(readonly agent: string) {
    super(`request to agent ${agent} abandoned: this process is shutting down`);
  }
}

/** A cancel named a run that already finished (completed or failed); only queued or running runs can be cancelled. */
export class RunFinishedError extends WerkpilotError {
  constructor(
    readonly runId: string,
    readonly state: string,
  ) {
    super(`run ${runId} already ${state}; only a queued or running run can be cancelled`);
  }
}

/**
 * An agent's code threw outside any `await` (in a timer, an event handler) while its run was active:
 * the run fails with this (an attempt spent) and the worker shuts down, since its state is unknown.
 */
export class UncaughtAgentError extends WerkpilotError {
  constructor(message: string) {
    super(`uncaught exception: ${message} (this worker shut down and was restarted by its supervisor)`);
  }
}

/** A leader-only write was refused: another scheduler replica holds the leader lease now. */
export class NotLeaderError extends WerkpilotError {
  constructor(what: string) {
    super(`${what} stopped: this scheduler is no longer the leader (another replica holds the lease)`);
  }
}

/** A `ctx.publish` topic or payload that is not JSON or is over its cap; nothing was published. */
export class PublishPayloadError extends InvalidInputError {}

/** A bulk DLQ action's selection no longer holds the runs its preview counted (dlq-groups.ts): preview again. */
export class SelectionChangedError extends WerkpilotError {
  constructor(
    readonly expected: number,
    readonly actual: number,
  ) {
    super(`the selection changed since its preview: ${actual} dead-lettered run${actual === 1 ? '' : 's'} match now, the preview counted ${expected}; preview again`);
  }
}
