/** `GET /api/v1/leader` on the dispatcher that leads (standbys answer it in standby-server.ts). */
import type { Core } from '../core.js';
import type { AppPlugin } from '../http/app.js';
import { LeaderViewSchema, leaderView, type LeaderView } from './leader-view.js';

/** `self`: this dispatcher's URL (known once its HTTP port is bound). */
export function leaderRoutes(core: Core, self: () => string): AppPlugin {
  return {
    name: 'leader',
    plugin: async (app) => {
      app.get('/api/v1/leader', { schema: { response: { 200: LeaderViewSchema } } }, async (): Promise<LeaderView> => {
        const shared = core.shared;
        if (!shared)
          return leaderView('leader', self(), 'sqlite', { url: self(), epoch: 0, since: core.startedAt, host: null, pid: process.pid });
        const l = shared.leadership;
        return {
          ...leaderView('leader', l.self.url, 'postgres', {
            url: l.self.url,
            epoch: l.epoch,
            since: l.since,
            host: null,
            pid: process.pid,
          }),
          storeAvailable: shared.durability.available,
        };
      });
    },
  };
}
