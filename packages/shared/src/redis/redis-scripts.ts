import type { Redis } from 'ioredis';

/**
 * Registers Lua scripts as ioredis commands on a connection. A script's name says how many KEYS it
 * takes, as BullMQ's script files do (`moveToActive-11.lua`): `werkpilotWriteHealth-3` becomes the
 * command `werkpilotWriteHealth` taking 3 keys. A name without a count (`werkpilotAdmitRun`) is a
 * script whose key count depends on the call (a run's dependencies, its optional key groups): its
 * command takes that count as its first argument.
 *
 * Each command is defined once per connection: every store and guard built on a shared connection
 * calls this, and redefining a command would only repeat the work (ioredis hashes the body again
 * and copies the script into every pipeline made on that connection afterwards).
 */
export function defineScripts(redis: Redis, scripts: Readonly<Record<string, string>>): void {
  const defined = redis as unknown as Record<string, unknown>;
  for (const [name, lua] of Object.entries(scripts)) {
    const counted = /^(\w+)-(\d+)$/.exec(name);
    const command = counted ? counted[1]! : name;
    if (typeof defined[command] === 'function') continue;
    redis.defineCommand(command, counted ? { numberOfKeys: Number(counted[2]), lua } : { lua });
  }
}
