/**
 * The dispatch area as one service for server.ts: the engine (on the core's store, events
 * and metrics) and its API routes. The agent hub takes `engine` as its DispatchEngine.
 */
import type { Core } from '../core.js';
import type { AppPlugin } from '../http/app.js';
import { TaskDispatcher } from './engine.js';
import { dispatchRoutes } from '../api/jobs/routes.js';

export interface DispatchService {
  engine: TaskDispatcher;
  plugins: AppPlugin[];
  stop(): void;
}

export function startDispatch(core: Core): DispatchService {
  const engine = new TaskDispatcher(
    {
      config: core.config,
      log: core.log,
      db: core.db,
      commits: core.commits,
      events: core.events,
      metrics: core.metrics,
      now: core.now,
    },
    core.shared ? { blobReplica: core.shared.blobs } : {},
  );
  return { engine, plugins: [dispatchRoutes(core, engine)], stop: () => engine.stop() };
}
