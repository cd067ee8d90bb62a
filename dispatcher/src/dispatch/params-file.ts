/**
 * Streaming parsers for sweep parameter files: CSV with a header line (RFC 4180: quoted
 * fields may hold commas, doubled quotes and newlines; CRLF or LF) or JSON lines (one object
 * per line). Text in, rows out, each with the physical line it starts on, so errors can name
 * the line of the user's file. A pure codec: no I/O, no clock; the caller feeds chunks.
 *
 * Errors are `ParamsFileError`s naming the line and, where it applies, the column.
 */

export type ParamsFormat = 'csv' | 'jsonl';
export const PARAMS_FORMATS: readonly ParamsFormat[] = ['csv', 'jsonl'];

/** A row is rejected past this many characters (a guard against a file with no newline). */
export const MAX_ROW_CHARS = 1024 * 1024;
export const MAX_COLUMNS = 1000;

export interface ParamsRowAt {
  /** 1-based line of the file where the row starts. */
  line: number;
  values: Record<string, string>;
}

export class ParamsFileError extends Error {
  constructor(
    readonly line: number,
    message: string,
    readonly column?: string,
  ) {
    super(message);
    this.name = 'ParamsFileError';
  }
}

export interface ParamsParser {
  /** Feeds the next chunk of text; complete rows go to `emit`. Throws ParamsFileError. */
  push(text: string, emit: (row: ParamsRowAt) => void): void;
  /** End of input: the last row (without a final newline) goes to `emit`. */
  end(emit: (row: ParamsRowAt) => void): void;
  /** Column names: the CSV header, or the JSON keys seen so far in first-seen order. */
  readonly columns: readonly string[];
}

export interface ParserOptions {
  /** Names every row must provide (the template's placeholders). */
  required: readonly string[];
}

export function createParamsParser(format: ParamsFormat, opts: ParserOptions): ParamsParser {
  return format === 'csv' ? new CsvParser(opts.required) : new JsonLinesParser(opts.required);
}

/** Parses a whole text at once (small files, tests). */
export function parseParamsText(format: ParamsFormat, text: string, opts: ParserOptions): { columns: string[]; rows: ParamsRowAt[] } {
  const p = createParamsParser(format, opts);
  const rows: ParamsRowAt[] = [];
  const emit = (r: ParamsRowAt) => rows.push(r);
  p.push(text, emit);
  p.end(emit);
  return { columns: [...p.columns], rows };
}

const enum Csv {
  FieldStart,
  Unquoted,
  Quoted,
  QuoteInQuoted,
}

const COMMA = 44;
const QUOTE = 34;
const LF = 10;
const CR = 13;

class CsvParser implements ParamsParser {
  #header: string[] | null = null;
  #fields: string[] = [];
  #field = '';
  #state = Csv.FieldStart;
  #line = 1;
  #recordLine = 1;
  #recordChars = 0;
  #first = true;

  constructor(private readonly required: readonly string[]) {}

  get columns(): readonly string[] {
    return this.#header ?? [];
  }

  push(text: string, emit: (row: ParamsRowAt) => void): void {
    if (this.#first && text.length > 0) {
      this.#first = false;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1); // UTF-8 byte-order mark
    }
    let start = 0;
    let lastEnd = 0;
    const n = text.length;
    for (let i = 0; i < n; i++) {
      const c = text.charCodeAt(i);
      if (c === LF && this.#state !== Csv.Quoted) lastEnd = i + 1;
      switch (this.#state) {
        case Csv.FieldStart:
          if (c === QUOTE) {
            this.#state = Csv.Quoted;
            start = i + 1;
          } else if (c === COMMA) this.#endField('');
          else if (c === LF) this.#endRecord('', emit);
          else if (c === CR) {
            /* CRLF: the LF ends the record */
          } else {
            this.#state = Csv.Unquoted;
            start = i;
          }
          break;
        case Csv.Unquoted:
          if (c === COMMA) {
            this.#endField(this.#field + text.slice(start, i));
            this.#state = Csv.FieldStart;
          } else if (c === LF) this.#endRecord(stripCr(this.#field + text.slice(start, i)), emit);
          break;
        case Csv.Quoted:
          if (c === QUOTE) {
            this.#field += text.slice(start, i);
            this.#state = Csv.QuoteInQuoted;
          } else if (c === LF) this.#line++;
          break;
        case Csv.QuoteInQuoted:
          if (c === QUOTE) {
            this.#field += '"';
            this.#state = Csv.Quoted;
            start = i + 1;
          } else if (c === COMMA) {
            this.#endField(this.#field);
            this.#state = Csv.FieldStart;
          } else if (c === LF) this.#endRecord(this.#field, emit);
          else if (c !== CR) throw new ParamsFileError(this.#line, `unexpected character ${JSON.stringify(text[i])} after a closing quote`);
          break;
      }
    }
    if (this.#state === Csv.Unquoted || this.#state === Csv.Quoted) {
      this.#field += text.slice(start);
    }
    this.#recordChars += n - lastEnd;
    if (this.#recordChars > MAX_ROW_CHARS) throw new ParamsFileError(this.#recordLine, `row longer than ${MAX_ROW_CHARS} characters`);
  }

  end(emit: (row: ParamsRowAt) => void): void {
    if (this.#state === Csv.Quoted) throw new ParamsFileError(this.#recordLine, 'quoted field not closed before the end of the file');
    if (this.#state === Csv.Unquoted || this.#state === Csv.QuoteInQuoted || this.#fields.length > 0 || this.#field !== '') {
      this.#endRecord(this.#state === Csv.Unquoted ? stripCr(this.#field) : this.#field, emit);
    }
    if (this.#header === null) throw new ParamsFileError(1, 'the file is empty: expected a header line naming the columns');
  }

  #endField(value: string): void {
    this.#fields.push(value);
    this.#field = '';
    if (this.#fields.length > MAX_COLUMNS) throw new ParamsFileError(this.#recordLine, `more than ${MAX_COLUMNS} columns`);
  }

  #endRecord(value: string, emit: (row: ParamsRowAt) => void): void {
    this.#fields.push(value);
    this.#field = '';
    this.#state = Csv.FieldStart;
    const fields = this.#fields;
    const line = this.#recordLine;
    this.#fields = [];
    this.#line++;
    this.#recordLine = this.#line;
    this.#recordChars = 0;
    if (fields.length === 1 && fields[0]!.trim() === '') return; // blank line
    if (this.#header === null) {
      this.#setHeader(fields, line);
      return;
    }
    const h = this.#header;
    if (fields.length !== h.length)
      throw new ParamsFileError(
        line,
        `${fields.length} field${fields.length === 1 ? '' : 's'}, but the header has ${h.length} columns (${h.join(', ')})`,
      );
    const values: Record<string, string> = {};
    for (let i = 0; i < h.length; i++) values[h[i]!] = fields[i]!;
    checkNoNul(values, line);
    emit({ line, values });
  }

  #setHeader(fields: string[], line: number): void {
    const names = fields.map((f) => f.trim());
    const seen = new Set<string>();
    names.forEach((name, i) => {
      if (name === '') throw new ParamsFileError(line, `header column ${i + 1} has no name`);
      if (seen.has(name)) throw new ParamsFileError(line, `header names column "${name}" twice`, name);
      seen.add(name);
    });
    for (const r of this.required)
      if (!seen.has(r))
        throw new ParamsFileError(line, `missing column "${r}": the command uses {${r}} but the header has only ${names.join(', ')}`, r);
    this.#header = names;
  }
}

class JsonLinesParser implements ParamsParser {
  #rest = '';
  #line = 1;
  readonly #columns: string[] = [];
  readonly #known = new Set<string>();

  constructor(private readonly required: readonly string[]) {}

  get columns(): readonly string[] {
    return this.#columns;
  }

  push(text: string, emit: (row: ParamsRowAt) => void): void {
    let buf = this.#rest + text;
    let from = 0;
    for (let nl = buf.indexOf('\n', from); nl >= 0; nl = buf.indexOf('\n', from)) {
      this.#row(buf.slice(from, nl), emit);
      from = nl + 1;
    }
    this.#rest = buf.slice(from);
    buf = '';
    if (this.#rest.length > MAX_ROW_CHARS) throw new ParamsFileError(this.#line, `row longer than ${MAX_ROW_CHARS} characters`);
  }

  end(emit: (row: ParamsRowAt) => void): void {
    if (this.#rest !== '') this.#row(this.#rest, emit);
    this.#rest = '';
  }

  #row(text: string, emit: (row: ParamsRowAt) => void): void {
    const line = this.#line++;
    const t = text.trim();
    if (t === '') return;
    let doc: unknown;
    try {
      doc = JSON.parse(t);
    } catch (err) {
      throw new ParamsFileError(line, `not valid JSON (${(err as Error).message})`);
    }
    if (typeof doc !== 'object' || doc === null || Array.isArray(doc))
      throw new ParamsFileError(line, 'expected a JSON object such as {"x": 1, "y": "a"}');
    const values: Record<string, string> = {};
    for (const [k, v] of Object.entries(doc)) {
      if (typeof v === 'string') values[k] = v;
      else if (typeof v === 'number' || typeof v === 'boolean') values[k] = String(v);
      else throw new ParamsFileError(line, `field "${k}" must be a string, a number or a boolean`, k);
      if (!this.#known.has(k)) {
        if (this.#known.size >= MAX_COLUMNS) throw new ParamsFileError(line, `more than ${MAX_COLUMNS} distinct fields`, k);
        this.#known.add(k);
        this.#columns.push(k);
      }
    }
    for (const r of this.required) if (!(r in values)) throw new ParamsFileError(line, `missing field "${r}" (the command uses {${r}})`, r);
    checkNoNul(values, line);
    emit({ line, values });
  }
}

/** Values become argv, environment or a path on the node, where a NUL byte cannot go. */
function checkNoNul(values: Record<string, string>, line: number): void {
  for (const [k, v] of Object.entries(values)) {
    if (k.includes('\0')) throw new ParamsFileError(line, 'a column name contains a NUL byte');
    if (v.includes('\0')) throw new ParamsFileError(line, 'contains a NUL byte (not allowed in params)', k);
  }
}

/** CRLF line ends: the CR before the LF is not part of the last field. */
function stripCr(v: string): string {
  return v.endsWith('\r') ? v.slice(0, -1) : v;
}
