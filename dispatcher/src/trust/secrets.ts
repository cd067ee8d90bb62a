/**
 * Long-lived secrets in the data dir, created on first start (mode 0600 whatever the umask;
 * files found wider are narrowed to it):
 *   admin.token   — bearer token for API calls that change anything (CLI, web actions)
 *   enroll.token  — lets an agent on a host that did not PXE-boot join the cluster
 *   identity.key / identity.pub — the dispatcher's Ed25519 key pair; agents verify the
 *                   dispatcher with the public key the RAM image carries
 */
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  timingSafeEqual,
  type KeyObject,
} from 'node:crypto';
import { chmodSync, existsSync, readFileSync, writeFileSync, renameSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ensureDataDir } from '../store/database.js';

export const ADMIN_TOKEN_FILE = 'admin.token';
export const ENROLL_TOKEN_FILE = 'enroll.token';
export const IDENTITY_KEY_FILE = 'identity.key';
export const IDENTITY_PUB_FILE = 'identity.pub';

export interface Secrets {
  adminToken: string;
  enrollToken: string;
  identity: DispatcherIdentity;
}

export interface DispatcherIdentity {
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** The public key as base64 of its raw 32 bytes: what the image and agents carry. */
  publicKeyB64: string;
  /** sha256 of the raw public key, hex: short enough to print and compare by eye. */
  fingerprint: string;
}

export function randomToken(bytes = 24): string {
  return randomBytes(bytes).toString('base64url');
}

/** Compares two tokens in constant time. */
export function tokensEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

export function loadOrCreateSecrets(dataDir: string): Secrets {
  ensureDataDir(dataDir);
  return {
    adminToken: loadOrCreateToken(join(dataDir, ADMIN_TOKEN_FILE)),
    enrollToken: loadOrCreateToken(join(dataDir, ENROLL_TOKEN_FILE)),
    identity: loadOrCreateIdentity(dataDir),
  };
}

function loadOrCreateToken(path: string): string {
  if (existsSync(path)) {
    keepPrivate(path);
    const t = readFileSync(path, 'utf8').trim();
    if (t.length >= 16) return t;
  }
  const t = randomToken();
  writeAtomic(path, t + '\n');
  return t;
}

export function loadOrCreateIdentity(dataDir: string): DispatcherIdentity {
  const keyPath = join(dataDir, IDENTITY_KEY_FILE);
  let privateKey: KeyObject;
  if (existsSync(keyPath)) {
    keepPrivate(keyPath);
    privateKey = createPrivateKey(readFileSync(keyPath));
  } else {
    const pair = generateKeyPairSync('ed25519');
    privateKey = pair.privateKey;
    writeAtomic(keyPath, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string);
  }
  const publicKey = createPublicKey(privateKey);
  const raw = rawPublicKey(publicKey);
  const publicKeyB64 = raw.toString('base64');
  const pubPath = join(dataDir, IDENTITY_PUB_FILE);
  if (!existsSync(pubPath) || readFileSync(pubPath, 'utf8').trim() !== publicKeyB64) writeAtomic(pubPath, publicKeyB64 + '\n', 0o644);
  return { privateKey, publicKey, publicKeyB64, fingerprint: createHash('sha256').update(raw).digest('hex') };
}

/** The raw 32-byte Ed25519 public key (the last 32 bytes of its SPKI DER encoding). */
export function rawPublicKey(key: KeyObject): Buffer {
  const der = key.export({ type: 'spki', format: 'der' });
  return der.subarray(der.length - 32);
}

/** Rebuilds a KeyObject from a raw base64 Ed25519 public key. */
export function publicKeyFromB64(b64: string): KeyObject {
  const raw = Buffer.from(b64, 'base64');
  if (raw.length !== 32) throw new Error('an Ed25519 public key is 32 bytes');
  const spkiPrefix = Buffer.from('302a300506032b6570032100', 'hex');
  return createPublicKey({ key: Buffer.concat([spkiPrefix, raw]), format: 'der', type: 'spki' });
}

function writeAtomic(path: string, content: string, mode = 0o600): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, content, { mode });
  chmodSync(tmp, mode); // the umask narrows `mode`, and a leftover tmp file keeps its own
  renameSync(tmp, path);
}

/** Narrows a secret file that others can read (written by an older version, or by hand). */
function keepPrivate(path: string): void {
  if ((statSync(path).mode & 0o077) !== 0) chmodSync(path, 0o600);
}
