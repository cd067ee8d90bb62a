/** MAC addresses are stored and compared as lower-case colon-separated hex (`52:54:00:12:34:56`). */

const MAC_RE = /^([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?([0-9a-f]{2})$/i;

export type Mac = string & { readonly __mac: unique symbol };

/** Parses `52:54:00:12:34:56`, `52-54-00-12-34-56` or `525400123456`; undefined if not a MAC. */
export function parseMac(text: string): Mac | undefined {
  const m = MAC_RE.exec(text.trim());
  if (!m) return undefined;
  return m.slice(1, 7).join(':').toLowerCase() as Mac;
}

export function macFromBytes(bytes: Uint8Array): Mac {
  return Array.from(bytes.subarray(0, 6), (b) => b.toString(16).padStart(2, '0')).join(':') as Mac;
}

export function macToBytes(mac: Mac): Buffer {
  return Buffer.from(mac.replaceAll(':', ''), 'hex');
}

/** iPXE's `${mac:hexhyp}` form, used in boot URLs. */
export function macHyphenated(mac: Mac): string {
  return mac.replaceAll(':', '-');
}
