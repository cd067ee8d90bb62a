/**
 * Metric names that more than one area uses: the service that owns the figure registers it
 * on `core.metrics`; the status page and `dispatcherctl status` read it back. Registering
 * under these names is what makes a figure show up on the page, not only at /metrics.
 */

/**
 * Gauge, label `state` = one of TASK_STATES (api/jobs/schemas.ts): tasks by state.
 * Registered by the dispatch engine (collect() from its own counts).
 */
export const TASKS_BY_STATE = 'lilcluster_tasks';
/** Counter: tasks handed to agents (the dispatch rate is its rate()). Dispatch engine. */
export const TASKS_DISPATCHED_TOTAL = 'lilcluster_tasks_dispatched_total';
/** Counter: tasks finished with a recorded result, label `outcome` = done | failed. Dispatch engine. */
export const TASKS_COMPLETED_TOTAL = 'lilcluster_tasks_completed_total';
/** Gauge: jobs not finished yet. Dispatch engine. */
export const JOBS_ACTIVE = 'lilcluster_jobs_active';

/** Gauge, label `state`: nodes by state (operator surface, from the registry). */
export const NODES_BY_STATE = 'lilcluster_nodes';
/** Gauge: agents connected now (agent hub). */
export const AGENTS_CONNECTED = 'lilcluster_agents_connected';
