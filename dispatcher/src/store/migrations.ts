/** Every module's tables, in the order they are applied. Add a module's migrations here. */
import type { Migration } from './database.js';
import { eventMigrations } from '../events/event-log.js';
import { nodeMigrations } from '../nodes/registry.js';
import { bootTokenMigrations } from '../trust/boot-tokens.js';
import { enrollTokenMigrations } from '../trust/enroll-tokens.js';
import { timelineMigrations } from '../boot/timeline.js';
import { leaseMigrations } from '../dhcp/leases.js';
import { dispatchMigrations } from '../dispatch/store.js';
import { imageMigrations } from '../images/releases.js';
import { consoleMigrations } from '../console/store.js';
import { nodeHealthMigrations } from '../nodes/node-health.js';
import { bootServerMigrations } from '../boot-server/registry.js';

export const allMigrations: Migration[] = [
  ...eventMigrations,
  ...nodeMigrations,
  ...bootTokenMigrations,
  ...timelineMigrations,
  ...leaseMigrations,
  ...dispatchMigrations,
  ...enrollTokenMigrations,
  ...imageMigrations,
  ...consoleMigrations,
  ...nodeHealthMigrations,
  ...bootServerMigrations,
];
