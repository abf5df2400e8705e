/**
 * A repeat of the same signal within this many milliseconds is the same request, not a second
 * one: under `pnpm <script>` one Ctrl-C arrives twice, once from the terminal (which signals the
 * whole foreground process group) and once relayed by pnpm to its child.
 */
export const RELAYED_SIGNAL_WINDOW_MS = 500;

export interface TerminationHandlers {
  /** The first SIGTERM or SIGINT: stop gracefully. */
  onFirst(signal: NodeJS.Signals): void;
  /** A later one: the person means it, stop at once. */
  onRepeat(signal: NodeJS.Signals): void;
  signals?: NodeJS.Signals[];
  clock?: () => number;
}

/**
 * Listens for SIGTERM and SIGINT, telling a first request from a repeated one; a relayed copy of
 * the first (same signal, within `RELAYED_SIGNAL_WINDOW_MS`) is ignored. Returns a function that
 * stops listening.
 */
export function listenForTermination({ onFirst, onRepeat, signals = ['SIGTERM', 'SIGINT'], clock = Date.now }: TerminationHandlers): () => void {
  let first: { signal: NodeJS.Signals; at: number } | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    if (!first) {
      first = { signal, at: clock() };
      onFirst(signal);
      return;
    }
    if (signal === first.signal && clock() - first.at < RELAYED_SIGNAL_WINDOW_MS) return;
    onRepeat(signal);
  };
  for (const signal of signals) process.on(signal, onSignal);
  return () => {
    for (const signal of signals) process.off(signal, onSignal);
  };
}

/**
 * Calls `onOrphaned` when the process that started this one with an IPC channel (`werkpilot
 * start`, a test harness, pm2's fork mode) goes away, however it ended — even SIGKILL closes the
 * channel — so no role outlives its supervisor. The channel itself never keeps the process alive.
 * Does nothing for a process started without a channel (a shell, systemd, Docker).
 */
export function stopWithParent(onOrphaned: () => void): () => void {
  if (!process.channel) return () => undefined;
  process.channel.unref();
  process.once('disconnect', onOrphaned);
  return () => process.off('disconnect', onOrphaned);
}
