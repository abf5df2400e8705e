import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import type { Express, Router } from 'express';
import type { Queues } from '@werkpilot/shared';

export const BULL_BOARD_PATH = '/queues';

/**
 * Bull Board for the `agents` and `system` queues at /queues. Without dashboard credentials it is
 * read-only (its buttons are hidden; the auth middleware refuses its mutating calls anyway).
 */
export function bullBoardRouter({ queues, readOnly }: { queues: Queues; readOnly: boolean }): Router {
  const serverAdapter = new ExpressAdapter();
  serverAdapter.setBasePath(BULL_BOARD_PATH);
  createBullBoard({
    // @bull-board/express pins its own @bull-board/api patch release, whose adapter type differs
    // only nominally from ours; the runtime interface is the same.
    serverAdapter: serverAdapter as unknown as Parameters<typeof createBullBoard>[0]['serverAdapter'],
    queues: [new BullMQAdapter(queues.agents, { readOnlyMode: readOnly }), new BullMQAdapter(queues.system, { readOnlyMode: readOnly })],
    options: { uiConfig: { boardTitle: 'Werkpilot queues', miscLinks: [{ text: 'Overview', url: '/' }] } },
  });
  // The adapter mounts an express app of its own, which would announce itself again.
  const board = serverAdapter.getRouter() as Express;
  board.disable('x-powered-by');
  return board as unknown as Router;
}
