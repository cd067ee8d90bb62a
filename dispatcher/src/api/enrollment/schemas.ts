/** Request and response schemas of /api/v1/enrollment-tokens (the CLI imports these, not the store). */
import { Type, type Static } from '@sinclair/typebox';

const Mac = Type.String({ pattern: '^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$', description: 'MAC address' });

export const EnrollTokenCreate = Type.Object(
  {
    mac: Type.Optional(Mac),
    /** Lifetime in seconds (default one day; at most a year). */
    expiresSeconds: Type.Optional(Type.Integer({ minimum: 60, maximum: 366 * 24 * 3600 })),
  },
  { additionalProperties: false },
);
export type EnrollTokenCreate = Static<typeof EnrollTokenCreate>;

export const EnrollTokenView = Type.Object({
  id: Type.String(),
  /** The MAC it admits; null: the first MAC that uses it. */
  mac: Type.Union([Type.String(), Type.Null()]),
  createdAt: Type.Integer(),
  expiresAt: Type.Integer(),
  usedAt: Type.Union([Type.Integer(), Type.Null()]),
});
export type EnrollTokenView = Static<typeof EnrollTokenView>;

/** Creation is the only time the token itself is shown. */
export const EnrollTokenCreated = Type.Object({ token: Type.String(), info: EnrollTokenView });
export type EnrollTokenCreated = Static<typeof EnrollTokenCreated>;

export const EnrollTokenList = Type.Object({ tokens: Type.Array(EnrollTokenView) });
export type EnrollTokenList = Static<typeof EnrollTokenList>;

export const EnrollTokenRef = Type.Object({ id: Type.String({ pattern: '^[0-9a-f]{12}$' }) });
