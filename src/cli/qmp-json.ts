/**
 * QMP input as QEMU's monitor reads it: a stream of JSON values, one after
 * another, with or without newlines between them (qobject/json-streamer.c
 * splits the stream at the end of each top-level value). `JsonStream` cuts
 * the stream into values; `readJsonValues` parses them with QEMU's error
 * texts.
 */

/** QEMU's limits on one value (qobject/json-streamer.c): larger input is refused, not buffered. */
const MAX_NESTING = 1024;
export const MAX_VALUE_BYTES = 64 << 20;
const MAX_TOKEN_COUNT = 2 << 20;

class JsonSyntaxError extends Error {}

/** Character codes the parsers look at. */
const enum Ch {
  Tab = 0x09,
  Newline = 0x0a,
  VerticalTab = 0x0b,
  FormFeed = 0x0c,
  Return = 0x0d,
  Space = 0x20,
  Quote = 0x22,
  Apostrophe = 0x27,
  Comma = 0x2c,
  Colon = 0x3a,
  OpenBracket = 0x5b,
  Backslash = 0x5c,
  CloseBracket = 0x5d,
  OpenBrace = 0x7b,
  CloseBrace = 0x7d,
}

const isSpace = (c: number) => c === Ch.Space || c === Ch.Newline || c === Ch.Tab || c === Ch.Return;
const isStructural = (c: number) =>
  c === Ch.OpenBrace || c === Ch.CloseBrace || c === Ch.OpenBracket || c === Ch.CloseBracket || c === Ch.Comma || c === Ch.Colon;
/** What ends a number or keyword: whitespace, a structural character, a quote. */
const endsScalar = (c: number) => isSpace(c) || isStructural(c) || c === Ch.Quote || c === Ch.Apostrophe || c === Ch.VerticalTab || c === Ch.FormFeed;

const WHITESPACE = new Set([' ', '\t', '\r', '\n']);
const STRUCTURAL = new Set(['{', '}', '[', ']', ',', ':']);
const ESCAPES: Readonly<Record<string, string>> = { '"': '"', "'": "'", '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

/**
 * The JSON values on one line of QMP input, one after another, as QEMU's
 * streaming parser reads them (qobject/json-lexer.c, json-parser.c): RFC
 * 8259 plus QEMU's single-quoted strings. A syntax error is reported with
 * QEMU's text and ends the line. Objects have no prototype, so a member
 * named "__proto__" is only a member.
 */
export function readJsonValues(line: string): Array<{ value: unknown } | { error: string }> {
  const results: Array<{ value: unknown } | { error: string }> = [];
  let pos = 0;

  const fail = (message: string): never => {
    throw new JsonSyntaxError(message);
  };
  const skipSpace = () => {
    while (pos < line.length && WHITESPACE.has(line[pos]!)) pos++;
  };
  /** The next significant character, or fails with "premature EOI" at the end of the line. */
  const peek = (): string => {
    skipSpace();
    if (pos >= line.length) fail('JSON parse error, premature EOI');
    return line[pos]!;
  };

  /**
   * A string from its opening quote. A string without escapes is a slice of
   * the line (no copy); one with escapes is built from runs, never a
   * character at a time (a 63 MiB string of escapes stays about its size).
   */
  const parseString = (): string => {
    const quote = line.charCodeAt(pos);
    const start = pos++;
    const parts: string[] = [];
    let built = '';
    for (let run = pos; ; ) {
      let c = 0;
      while (pos < line.length && (c = line.charCodeAt(pos)) !== quote && c !== Ch.Backslash && c >= 0x20) pos++;
      if (pos >= line.length) fail('JSON parse error, premature EOI');
      if (c === quote) {
        if (parts.length === 0 && built === '') return line.slice(run, pos++);
        parts.push(line.slice(run, pos++));
        return built + parts.join('');
      }
      if (c < 0x20) fail(`JSON parse error, stray '${line.slice(start, pos + 1)}'`);
      parts.push(line.slice(run, pos), escape());
      run = pos;
      // Joined in batches: a rope of millions of one-character pieces would cost far more than the text.
      if (parts.length >= 8192) {
        built += parts.join('');
        parts.length = 0;
      }
    }
  };

  /** The escape sequence at pos (a backslash), decoded; pos moves past it. */
  const escape = (): string => {
    const e = line[pos + 1];
    if (e === 'u') {
      const hex = line.slice(pos + 2, pos + 6);
      if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail('JSON parse error, invalid hex escape sequence in string');
      pos += 6;
      return String.fromCharCode(parseInt(hex, 16));
    }
    if (e === undefined || !Object.hasOwn(ESCAPES, e)) fail('JSON parse error, invalid escape sequence in string');
    pos += 2;
    return ESCAPES[e!]!;
  };

  const parseValue = (depth: number): unknown => {
    const c = peek();
    if (c === '{' || c === '[') {
      if (depth + 1 > MAX_NESTING) fail('JSON nesting depth limit exceeded');
      return c === '{' ? parseObject(depth + 1) : parseArray(depth + 1);
    }
    if (c === '"' || c === "'") return parseString();
    if (c === '-' || (c >= '0' && c <= '9')) {
      NUMBER.lastIndex = pos;
      const m = NUMBER.exec(line);
      if (!m) fail(`JSON parse error, stray '${c}'`);
      pos += m![0].length;
      return Number(m![0]);
    }
    if (c >= 'a' && c <= 'z') {
      const start = pos;
      while (pos < line.length && line[pos]! >= 'a' && line[pos]! <= 'z') pos++;
      const word = line.slice(start, pos);
      if (word === 'true') return true;
      if (word === 'false') return false;
      if (word === 'null') return null;
      return fail(`JSON parse error, invalid keyword '${word}'`);
    }
    if (STRUCTURAL.has(c)) return fail('JSON parse error, expecting value');
    return fail(`JSON parse error, stray '${c}'`);
  };

  const parseObject = (depth: number): Record<string, unknown> => {
    const object = Object.create(null) as Record<string, unknown>;
    pos++; // {
    if (peek() === '}') {
      pos++;
      return object;
    }
    for (;;) {
      const k = peek();
      if (k !== '"' && k !== "'") fail('JSON parse error, key is not a string in object');
      const key = parseString();
      if (peek() !== ':') fail('JSON parse error, missing : in object pair');
      pos++;
      object[key] = parseValue(depth);
      const next = peek();
      pos++;
      if (next === '}') return object;
      if (next !== ',') fail('JSON parse error, expected separator in dict');
    }
  };

  const parseArray = (depth: number): unknown[] => {
    const array: unknown[] = [];
    pos++; // [
    if (peek() === ']') {
      pos++;
      return array;
    }
    for (;;) {
      array.push(parseValue(depth));
      const next = peek();
      pos++;
      if (next === ']') return array;
      if (next !== ',') fail('JSON parse error, expected separator in list');
    }
  };

  try {
    for (skipSpace(); pos < line.length; skipSpace()) results.push({ value: parseValue(0) });
  } catch (err) {
    if (!(err instanceof JsonSyntaxError)) throw err;
    results.push({ error: err.message });
  }
  return results;
}

export type JsonItem = { value: unknown } | { error: string };

/**
 * Cuts a character stream into top-level JSON values, each handed to
 * `onValue` as soon as it is complete (parsed by readJsonValues). Strings,
 * including QEMU's single-quoted ones, may hold brackets. Each character is
 * looked at once, and a value keeps one piece per chunk it spans, so memory
 * and time follow the input's size. QEMU's limits apply to each value (64
 * MiB, 2 Mi tokens, 1024 levels): a value past one is refused with QEMU's
 * text, and the rest of its line dropped so that the next line is read
 * afresh.
 */
export class JsonStream {
  /** The value being read: a piece of each earlier chunk it spans. */
  private pieces: string[] = [];
  private piecesLength = 0;
  private reading = false;
  private tokens = 0;
  private depth = 0;
  /** The quote of the string being read, 0 outside strings. */
  private quote = 0;
  private escaped = false;
  /** A number or keyword, complete at the next delimiter. */
  private scalar = false;
  /** After a value refused: the rest of its line is dropped. */
  private skipLine = false;

  constructor(private readonly onValue: (item: JsonItem) => void) {}

  push(chunk: string): void {
    /** Where the value being read starts in this chunk. */
    let from = 0;
    for (let i = 0; i < chunk.length; i++) {
      if (this.skipLine) {
        const newline = chunk.indexOf('\n', i);
        if (newline < 0) return;
        this.skipLine = false;
        i = newline;
        continue;
      }
      const c = chunk.charCodeAt(i);
      if (this.quote !== 0) {
        if (this.escaped) this.escaped = false;
        else if (c === Ch.Backslash) this.escaped = true;
        else if (c === this.quote) {
          this.quote = 0;
          if (this.depth === 0) this.emit(chunk, from, i + 1);
        }
        continue;
      }
      if (this.scalar) {
        if (!endsScalar(c)) continue;
        this.scalar = false;
        if (this.depth === 0) this.emit(chunk, from, i);
      }
      if (isSpace(c)) continue;
      if (!this.reading) {
        this.reading = true;
        from = i;
      }
      const closes = c === Ch.CloseBrace || c === Ch.CloseBracket;
      // As QEMU: the token that completes a value is taken whatever the count.
      if (++this.tokens > MAX_TOKEN_COUNT && !(closes && this.depth <= 1)) {
        this.refuse('JSON token count limit exceeded');
        continue;
      }
      if (c === Ch.Quote || c === Ch.Apostrophe) {
        this.quote = c;
      } else if (c === Ch.OpenBrace || c === Ch.OpenBracket) {
        if (++this.depth > MAX_NESTING) this.refuse('JSON nesting depth limit exceeded');
      } else if (closes) {
        // At the top level, a stray closer is an error of its own.
        if (this.depth === 0 || --this.depth === 0) this.emit(chunk, from, i + 1);
      } else if (c === Ch.Comma || c === Ch.Colon) {
        if (this.depth === 0) this.emit(chunk, from, i + 1);
      } else {
        this.scalar = true;
      }
    }
    if (!this.reading) return;
    this.pieces.push(from === 0 ? chunk : chunk.slice(from));
    this.piecesLength += chunk.length - from;
    if (this.piecesLength > MAX_VALUE_BYTES) this.refuse('JSON token size limit exceeded');
  }

  /** The input ended: what was started is a value, or an error ("premature EOI"). */
  end(): void {
    if (this.reading && !this.skipLine) this.emit('', 0, 0);
    this.reset();
  }

  /** Refuses the value being read, as QEMU does; the rest of its line goes too, so the next line is read afresh. */
  private refuse(error: string): void {
    this.reset();
    this.skipLine = true;
    this.onValue({ error });
  }

  /** The value ends at `to` in `chunk`: parsed and handed on. */
  private emit(chunk: string, from: number, to: number): void {
    if (this.piecesLength + (to - from) > MAX_VALUE_BYTES) {
      this.refuse('JSON token size limit exceeded');
      return;
    }
    this.pieces.push(chunk.slice(from, to));
    const text = this.pieces.length === 1 ? this.pieces[0]! : this.pieces.join('');
    this.reset();
    for (const item of readJsonValues(text)) this.onValue(item);
  }

  private reset(): void {
    this.pieces = [];
    this.piecesLength = 0;
    this.reading = false;
    this.tokens = 0;
    this.depth = 0;
    this.quote = 0;
    this.escaped = false;
    this.scalar = false;
  }
}
