/**
 * Serial console lines from a hostile byte stream (what `ipmitool sol activate` prints: a
 * terminal's output, firmware screens with ANSI escape sequences, CR-LF line ends, or
 * garbage). Escape sequences are dropped; those that clear the screen or place the cursor
 * end the line, as the text after them is drawn elsewhere on a terminal. Pure: chunks in, finished lines out, with bounded state whatever comes — at most
 * MAX_LINE_CHARS of an unfinished line, MAX_ESCAPE_CHARS of an unfinished escape sequence and
 * the UTF-8 decoder's few bytes. A line longer than MAX_LINE_CHARS is cut into pieces marked
 * "…", so a stream without newlines still becomes bounded lines (the caller's line budget and
 * the store's caps bound how many are kept).
 */
import { StringDecoder } from 'node:string_decoder';
import { MAX_LINE_CHARS } from './lines.js';

export { MAX_LINE_CHARS };
/** An escape sequence longer than this is garbage: dropped, and the text after it kept. */
export const MAX_ESCAPE_CHARS = 64;

/** Where the splitter is inside an escape sequence (ECMA-48). */
type EscState = 'none' | 'esc' | 'csi' | 'str' | 'strEsc' | 'nf';

const ESC = '\x1b';

export class SerialLineSplitter {
  readonly #decoder = new StringDecoder('utf8');
  #line = '';
  #esc: EscState = 'none';
  #escLen = 0;
  /** The escape sequence just read clears the screen or moves the cursor: the line ends there. */
  #breaks = false;
  /** Lines cut at MAX_LINE_CHARS so far. */
  cut = 0;

  /** The lines finished by this chunk, in order; never empty strings. */
  push(chunk: Uint8Array): string[] {
    return this.#feed(this.#decoder.write(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)));
  }

  /** The stream ended: what is left of the last line, if anything. */
  end(): string[] {
    const out = this.#feed(this.#decoder.end());
    this.#esc = 'none';
    this.#finish(out);
    return out;
  }

  /** Characters held for the unfinished line and escape sequence (the bound the fuzzer checks). */
  get pending(): number {
    return this.#line.length + this.#escLen;
  }

  #feed(text: string): string[] {
    const out: string[] = [];
    for (const ch of text) {
      if (this.#esc !== 'none' && this.#escape(ch)) {
        if (this.#breaks) {
          this.#breaks = false;
          this.#finish(out);
        }
        continue;
      }
      if (ch === '\n' || ch === '\r') this.#finish(out);
      else if (ch === ESC) {
        this.#esc = 'esc';
        this.#escLen = 1;
      } else if (ch === '\t' || !/[\u0000-\u001f\u007f-\u009f]/.test(ch)) {
        this.#line += ch;
        if (this.#line.length >= MAX_LINE_CHARS) {
          out.push(`${this.#line.trimEnd()}…`);
          this.#line = '';
          this.cut++;
        }
      }
      // Other control characters (BEL, backspace, C1...) are dropped.
    }
    return out;
  }

  /**
   * Advances an escape sequence by one character: true when the character belonged to it.
   * A character that cannot be part of it (a line end, a non-ASCII character) ends it and is
   * read as text, so garbage cannot swallow the lines after it.
   */
  #escape(ch: string): boolean {
    const c = ch.codePointAt(0)!;
    if (++this.#escLen > MAX_ESCAPE_CHARS || ch === '\n' || ch === '\r' || c > 0x7e) {
      this.#esc = 'none';
      this.#escLen = 0;
      return ch !== '\n' && ch !== '\r' && c <= 0x7e; // an over-long sequence's last character is dropped with it
    }
    const done = () => {
      this.#esc = 'none';
      this.#escLen = 0;
      return true;
    };
    switch (this.#esc) {
      case 'esc':
        if (ch === '[') this.#esc = 'csi';
        else if (ch === ']' || ch === 'P' || ch === 'X' || ch === '^' || ch === '_') this.#esc = 'str';
        else if (c >= 0x20 && c <= 0x2f) this.#esc = 'nf';
        else if (c >= 0x30 && c <= 0x7e) {
          this.#breaks = ch === 'c'; // RIS, a full reset: firmware starts a new screen
          return done();
        } else if (ch !== ESC) return done(); // a control character after ESC: both dropped
        return true;
      case 'csi':
        if (c >= 0x20 && c <= 0x3f) return true; // parameters and intermediates
        if (c >= 0x40) {
          // Erase in display, cursor position: a new screen or a jump, not the same line.
          this.#breaks = ch === 'J' || ch === 'H' || ch === 'f';
          return done(); // final byte
        }
        return done(); // a control character inside: the sequence is abandoned
      case 'str':
        if (ch === '\x07') return done();
        if (ch === ESC) this.#esc = 'strEsc';
        return true;
      case 'strEsc':
        if (ch === '\\') return done();
        this.#esc = 'str';
        return true;
      case 'nf':
        if (c >= 0x20 && c <= 0x2f) return true;
        return done();
      default:
        return false;
    }
  }

  #finish(out: string[]): void {
    const line = this.#line.trimEnd();
    this.#line = '';
    if (line) out.push(line);
  }
}
