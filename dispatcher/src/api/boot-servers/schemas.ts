/**
 * Boot servers per segment (dispatcher/src/boot-server/): the operator's view
 * (GET|POST /api/v1/boot-servers, DELETE …/{name}) and what a boot server and its leader say
 * to each other under /api/v1/boot-server/ (the boot server's token; README "Boot servers").
 */
import { Type, type Static } from '@sinclair/typebox';
import { Nullable } from '../schemas.js';
import { IMAGE_NAME_PATTERN, SHA256_PATTERN } from '../jobs/schemas.js';

export const BootServerName = Type.String({ pattern: '^[a-z0-9][a-z0-9-]{0,62}$', description: 'a-z, 0-9 and -, at most 63' });

export const BootServerAdd = Type.Object({ name: BootServerName }, { additionalProperties: false });
export type BootServerAdd = Static<typeof BootServerAdd>;

/** Creation is the only time the token is shown. */
export const BootServerAdded = Type.Object({ name: Type.String(), token: Type.String() });
export type BootServerAdded = Static<typeof BootServerAdded>;

export const BootServerRef = Type.Object({ name: BootServerName });

const Url = Type.String({ pattern: '^https?://[^/?#\\s]+$', maxLength: 300, description: 'scheme, host and port; no path' });
const Mac = Type.String({ pattern: '^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$' });
const Ipv4 = Type.String({ pattern: '^\\d{1,3}(\\.\\d{1,3}){3}$' });
const Sha256 = Type.String({ pattern: SHA256_PATTERN });

/** What a boot server says in each heartbeat. */
export const BootServerReport = Type.Object(
  {
    url: Url,
    version: Type.String({ maxLength: 64 }),
    interface: Nullable(Type.String({ maxLength: 64 })),
    dhcp: Type.String({ maxLength: 16 }),
    cache: Type.Object(
      {
        files: Type.Integer({ minimum: 0 }),
        bytes: Type.Integer({ minimum: 0 }),
        fills: Type.Integer({ minimum: 0 }),
        refused: Type.Integer({ minimum: 0, description: 'files refused: their bytes disagreed with the leader’s sha256' }),
      },
      { additionalProperties: false },
    ),
    errors: Type.Array(Type.Object({ at: Type.Integer(), message: Type.String({ maxLength: 1000 }) }, { additionalProperties: false }), {
      maxItems: 20,
    }),
    eventsDropped: Type.Integer({ minimum: 0 }),
  },
  { additionalProperties: false },
);
export type BootServerReport = Static<typeof BootServerReport>;

export const BootServerView = Type.Object({
  name: Type.String(),
  state: Type.Union([Type.Literal('online'), Type.Literal('lost'), Type.Literal('never-seen')]),
  createdAt: Type.Integer(),
  lastSeen: Nullable(Type.Integer()),
  address: Nullable(Type.String()),
  report: Nullable(BootServerReport),
  events: Type.Integer({ description: 'boot timeline events it forwarded since the leader started' }),
  scripts: Type.Integer({ description: 'boot scripts served through it since the leader started' }),
});
export type BootServerView = Static<typeof BootServerView>;

export const BootServerList = Type.Object({ bootServers: Type.Array(BootServerView) });
export type BootServerList = Static<typeof BootServerList>;

export const HeartbeatAnswer = Type.Object({ heartbeatSeconds: Type.Number() });
export type HeartbeatAnswer = Static<typeof HeartbeatAnswer>;

/** A boot script for a client of the boot server's segment, asked on its behalf. */
export const ScriptRequest = Type.Object(
  {
    mac: Mac,
    /** The client's address on the boot server's segment. */
    ip: Ipv4,
    /** Where the script's files and retries point: the boot server, as its clients reach it. */
    bootUrl: Url,
    /** The leader as that segment reaches it: the script's `lc.dispatcher=`. */
    leaderUrl: Url,
  },
  { additionalProperties: false },
);
export type ScriptRequest = Static<typeof ScriptRequest>;

export const ScriptAnswer = Type.Object({
  /** The status the client gets (200, or 403 when the leader refuses where it asks from). */
  status: Type.Integer(),
  script: Type.String(),
  /** The image version the script boots (the boot server fills its cache at once), or null. */
  image: Nullable(Type.Object({ image: Type.String(), version: Type.String() })),
});
export type ScriptAnswer = Static<typeof ScriptAnswer>;

export const ImageVersionRef = Type.Object({
  image: Type.String({ pattern: IMAGE_NAME_PATTERN }),
  version: Type.String({ pattern: '^[0-9a-f]{12}$' }),
});

/** An image version's files as the leader serves them: what a boot server's cache must hold. */
export const ImageManifest = Type.Object({
  image: Type.String(),
  version: Type.String(),
  files: Type.Array(Type.Object({ name: Type.String(), sha256: Sha256, size: Type.Integer({ minimum: 0 }) })),
});
export type ImageManifest = Static<typeof ImageManifest>;

/** Boot timeline stages seen on the boot server's segment (DHCP, TFTP, HTTP). */
export const BootEventBatch = Type.Object(
  {
    events: Type.Array(
      Type.Object(
        {
          mac: Mac,
          stage: Type.String({ maxLength: 32 }),
          ts: Type.Integer(),
          newBoot: Type.Boolean(),
          detail: Nullable(Type.Record(Type.String({ maxLength: 64 }), Type.Unknown())),
        },
        { additionalProperties: false },
      ),
      { maxItems: 500 },
    ),
  },
  { additionalProperties: false },
);
export type BootEventBatch = Static<typeof BootEventBatch>;
