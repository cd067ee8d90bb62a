/**
 * Trust between agent and dispatcher, without TLS: a signed ephemeral key exchange, then a
 * MAC on every message (the design notes' "a client shouldn't accept to execute commands from
 * an untrusted server", seeds/001).
 *
 *   agent → hello    { nonce Na (32 random bytes), ephemeral X25519 key Ea, mac, token }
 *   disp. → welcome  { ephemeral X25519 key Ed, sig = Ed25519_sign(identity, T) }
 *       T = "lilcluster agent handshake v1" 0x00 || Na || Ea || Ed || mac (6 bytes)
 *   both:  S = X25519(own ephemeral, peer's ephemeral)
 *          K_ad ‖ K_da = HKDF-SHA256(ikm S, salt Na, info "lilcluster session v1", 64 bytes)
 *   every later frame: tag = HMAC-SHA256(K_dir, seq as u64 BE ‖ body)[0..16]
 *
 * The agent checks `sig` with the dispatcher's public key from its image (or --dispatcher-key);
 * since T holds the agent's own fresh nonce and ephemeral key, a recorded welcome cannot be
 * replayed and a man in the middle cannot substitute keys. `seq` is implicit (one counter per
 * direction, starting at 0): TCP keeps order, so an injected, dropped or replayed frame fails
 * its tag. The token proves the agent to the dispatcher; it travels in clear (no encryption:
 * confidentiality of tasks is not a goal on the node network), so it is bound to the MAC and
 * spent by the hello that carries it: a boot token admits one hello; the session credential
 * for the next reconnect is derived from this exchange (reconnect below) and never sent
 * before it is used. One HMAC per message, whatever its batch size.
 */
import {
  createHmac,
  createPublicKey,
  createSecretKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  randomBytes,
  sign,
  timingSafeEqual,
  verify,
  type KeyObject,
} from 'node:crypto';
import { TAG_BYTES } from './codec.js';

const TRANSCRIPT_LABEL = Buffer.from('lilcluster agent handshake v1\0');
const HKDF_INFO = Buffer.from('lilcluster session v1');
const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

export interface EphemeralKey {
  privateKey: KeyObject;
  /** Raw 32-byte public key. */
  publicRaw: Buffer;
}

export function newEphemeralKey(): EphemeralKey {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  const der = publicKey.export({ type: 'spki', format: 'der' });
  return { privateKey, publicRaw: der.subarray(der.length - 32) };
}

export function newNonce(): Buffer {
  return randomBytes(32);
}

/** Decodes base64 of exactly 32 bytes (keys, nonces); undefined otherwise. */
export function raw32(b64: string): Buffer | undefined {
  const b = Buffer.from(b64, 'base64');
  return b.length === 32 ? b : undefined;
}

/** The bytes the dispatcher signs. */
export function transcript(agentNonce: Buffer, agentEphemeral: Buffer, dispatcherEphemeral: Buffer, mac: string): Buffer {
  const macBytes = Buffer.from(mac.replaceAll(':', ''), 'hex');
  return Buffer.concat([TRANSCRIPT_LABEL, agentNonce, agentEphemeral, dispatcherEphemeral, macBytes]);
}

export function signTranscript(identity: KeyObject, t: Buffer): string {
  return sign(null, t, identity).toString('base64');
}

export function verifyTranscript(dispatcherPublicKey: KeyObject, t: Buffer, signatureB64: string): boolean {
  const sig = Buffer.from(signatureB64, 'base64');
  if (sig.length !== 64) return false;
  try {
    return verify(null, t, dispatcherPublicKey, sig);
  } catch {
    return false;
  }
}

/** Parses the dispatcher's public key: base64 of the raw 32 bytes (identity.pub) or a PEM SPKI. */
export function parseDispatcherPublicKey(text: string): KeyObject {
  const trimmed = text.trim();
  if (trimmed.startsWith('-----BEGIN')) {
    const key = createPublicKey(trimmed);
    if (key.asymmetricKeyType !== 'ed25519') throw new Error(`expected an Ed25519 key, got ${key.asymmetricKeyType}`);
    return key;
  }
  const raw = raw32(trimmed);
  if (!raw || !/^[A-Za-z0-9+/]{43}=?$/.test(trimmed))
    throw new Error("expected the base64 of a raw 32-byte Ed25519 public key (the dispatcher's identity.pub)");
  return createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
}

export interface SessionKeys {
  agentToDispatcher: KeyObject;
  dispatcherToAgent: KeyObject;
  /**
   * The credential the agent presents (hello auth `session`) when it reconnects during this
   * boot: both sides derive it, it never travels in this session. The dispatcher keeps its
   * hash (trust/boot-tokens.ts).
   */
  reconnect: string;
}

/**
 * Both sides' session keys from the X25519 exchange (own private key, peer's raw public key).
 * HKDF output is prefix-stable, so the reconnect credential (bytes 64-95) leaves the MAC keys
 * of earlier versions unchanged.
 */
export function deriveSessionKeys(own: KeyObject, peerRaw: Buffer, agentNonce: Buffer): SessionKeys {
  const peer = createPublicKey({ key: Buffer.concat([X25519_SPKI_PREFIX, peerRaw]), format: 'der', type: 'spki' });
  const shared = diffieHellman({ privateKey: own, publicKey: peer });
  const okm = Buffer.from(hkdfSync('sha256', shared, agentNonce, HKDF_INFO, 96));
  return {
    agentToDispatcher: createSecretKey(okm.subarray(0, 32)),
    dispatcherToAgent: createSecretKey(okm.subarray(32, 64)),
    reconnect: okm.subarray(64, 96).toString('base64url'),
  };
}

/** Tags outgoing bodies with a running sequence number. */
export class Sealer {
  #seq = 0n;
  readonly #seqBuf = Buffer.alloc(8);
  constructor(private readonly key: KeyObject) {}

  tag(body: Buffer): Buffer {
    this.#seqBuf.writeBigUInt64BE(this.#seq++);
    return createHmac('sha256', this.key).update(this.#seqBuf).update(body).digest().subarray(0, TAG_BYTES);
  }
}

/** Checks incoming tags; the counter moves on only when a tag verifies, so an injected frame is dropped without desynchronizing the stream. */
export class Opener {
  #seq = 0n;
  readonly #seqBuf = Buffer.alloc(8);
  constructor(private readonly key: KeyObject) {}

  open(tag: Buffer, body: Buffer): boolean {
    this.#seqBuf.writeBigUInt64BE(this.#seq);
    const expected = createHmac('sha256', this.key).update(this.#seqBuf).update(body).digest().subarray(0, TAG_BYTES);
    if (tag.length !== TAG_BYTES || !timingSafeEqual(tag, expected)) return false;
    this.#seq++;
    return true;
  }
}
