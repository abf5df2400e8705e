import { Router } from 'express';
import { getPipeline, parseInput, pipelineIdParam, type Keys, type Queues, type Redis, type Registry } from '@werkpilot/shared';

/**
 * `GET /api/pipelines/:id`: a pipeline's runs in dependency order with their states and outcomes,
 * and each run's dependencies within the pipeline (the edges of its graph, from the registry), so
 * the run page draws the graph without knowing the registry.
 */
export function pipelinesRoutes({ queues, redis, keys, registry }: { queues: Queues; redis: Redis; keys: Keys; registry: Registry }): Router {
  const router = Router();
  router.get('/api/pipelines/:id', async (req, res) => {
    const pipelineId = parseInput(pipelineIdParam, req.params.id, 'id');
    const status = await getPipeline({ queue: queues.agents, redis, keys }, pipelineId);
    const inPipeline = new Set(status.runs.map((r) => r.agent));
    res.json({
      ...status,
      runs: status.runs.map((run) => ({ ...run, dependsOn: (registry.get(run.agent)?.dependsOn ?? []).filter((d) => inPipeline.has(d)) })),
    });
  });
  return router;
}
