export * from './agents-dir.js';
export * from './processes.js';
export * from './redis-harness.js';
export * from './wait-for.js';
export * from './agent-cluster.js';
export * from './event-stream.js';
export * from './otlp-receiver.js';
export * from './tools.js';
