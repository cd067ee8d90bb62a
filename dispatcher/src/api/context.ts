/** What the operator API's routes share: the core and the operator's services. */
import type { Core } from '../core.js';
import type { NodeControl } from '../agents/control-contract.js';
import type { NodeActions } from '../nodes/actions.js';
import type { Operations } from '../nodes/rolling-reboot.js';
import type { Rollouts } from '../images/rollout.js';
import type { ThroughputSampler } from './status/throughput.js';
import type { LiveFeed } from './live/feed.js';
import type { SseSink } from './streams.js';

export interface OperatorApi {
  core: Core;
  actions: NodeActions;
  operations: Operations;
  /** Image rollouts and rollbacks. */
  rollouts: Rollouts;
  /** The agent hub, or NO_AGENTS until one is attached. */
  control(): NodeControl;
  throughput: ThroughputSampler;
  feed: LiveFeed;
  /** Open event streams, closed when the dispatcher stops (an open stream would hold up the HTTP server's close). */
  streams: Set<SseSink>;
}

/** Route schema key marking a route that needs the admin token (for the OpenAPI document). */
export const ADMIN_SECURITY = [{ adminToken: [] }, { adminCookie: [] }];

/** Largest JSON body of an operator call (node actions, operations); exec has its own. */
export const OPERATOR_BODY_LIMIT = 64 * 1024;
export const EXEC_BODY_LIMIT = 1024 * 1024;
