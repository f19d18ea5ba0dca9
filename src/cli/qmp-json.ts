/**
 * QMP input as QEMU's monitor reads it: a stream of JSON values, one after
 * another, with or without newlines between them (qobject/json-streamer.c
 * splits the stream at the end of each top-level value). `JsonStream` cuts
 * the stream into values; `readJsonValues` parses them with QEMU's error
 * texts.
 */

/** QEMU's parser limit (qobject/json-streamer.c). */
const MAX_NESTING = 1024;

class JsonSyntaxError extends Error {}

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

  const parseString = (): string => {
    const quote = line[pos]!;
    const start = pos++;
    let out = '';
    for (;;) {
      if (pos >= line.length) fail('JSON parse error, premature EOI');
      const c = line[pos]!;
      if (c === quote) {
        pos++;
        return out;
      }
      if (c < ' ') fail(`JSON parse error, stray '${line.slice(start, pos + 1)}'`);
      if (c !== '\\') {
        out += c;
        pos++;
        continue;
      }
      const e = line[pos + 1];
      if (e === 'u') {
        const hex = line.slice(pos + 2, pos + 6);
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail('JSON parse error, invalid hex escape sequence in string');
        out += String.fromCharCode(parseInt(hex, 16));
        pos += 6;
      } else if (e !== undefined && Object.hasOwn(ESCAPES, e)) {
        out += ESCAPES[e];
        pos += 2;
      } else {
        fail('JSON parse error, invalid escape sequence in string');
      }
    }
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

/** QEMU's limit on one value's size (MAX_TOKEN_SIZE): larger input is refused, not buffered. */
export const MAX_VALUE_BYTES = 64 << 20;

export type JsonItem = { value: unknown } | { error: string };

/** What ends a top-level number or keyword. */
const DELIMITER = /[\s{}[\],:"']/g;
/** What matters inside an object or array: quotes and brackets. */
const MEANINGFUL = /["'{}[\]]/g;

/**
 * Cuts a character stream into top-level JSON values, each handed to
 * `onValue` as soon as it is complete (parsed by readJsonValues). Strings,
 * including QEMU's single-quoted ones, may hold brackets.
 */
export class JsonStream {
  private text = '';
  private depth = 0;
  private quote: string | null = null;
  private escaped = false;
  /** A number or keyword at the top level, complete at the next delimiter. */
  private scalar = false;
  /** After a value refused (too deep, too large): the rest of its line is dropped. */
  private skipLine = false;

  constructor(private readonly onValue: (item: JsonItem) => void) {}

  push(chunk: string): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.skipLine) {
        const newline = chunk.indexOf('\n', i);
        if (newline < 0) return;
        this.skipLine = false;
        i = newline + 1;
      } else if (this.quote !== null) {
        i = this.inString(chunk, i);
      } else if (this.scalar) {
        DELIMITER.lastIndex = i;
        const m = DELIMITER.exec(chunk);
        const stop = m ? m.index : chunk.length;
        this.text += chunk.slice(i, stop);
        i = stop;
        if (m) this.emit();
        else this.checkSize();
      } else if (this.depth > 0) {
        MEANINGFUL.lastIndex = i;
        const m = MEANINGFUL.exec(chunk);
        const stop = m ? m.index + 1 : chunk.length;
        this.text += chunk.slice(i, stop);
        i = stop;
        if (m) this.inValue(m[0]);
        this.checkSize();
      } else {
        this.startValue(chunk[i]!);
        i++;
      }
    }
  }

  /** The input ended: what was started is a value, or an error ("premature EOI"). */
  end(): void {
    if (this.text.trim() !== '') this.emit();
    this.reset();
  }

  /** Inside a string: up to its closing quote (escapes taken as they come). Returns where to go on. */
  private inString(chunk: string, from: number): number {
    let i = from;
    if (this.escaped) {
      this.text += chunk[i];
      this.escaped = false;
      return i + 1;
    }
    const quote = chunk.indexOf(this.quote!, i);
    const backslash = chunk.indexOf('\\', i);
    const stop = quote < 0 ? backslash : backslash < 0 ? quote : Math.min(quote, backslash);
    if (stop < 0) {
      this.text += chunk.slice(i);
      this.checkSize();
      return chunk.length;
    }
    this.text += chunk.slice(i, stop + 1);
    i = stop + 1;
    if (chunk[stop] === '\\') {
      this.escaped = true;
    } else {
      this.quote = null;
      if (this.depth === 0) this.emit();
    }
    this.checkSize();
    return i;
  }

  /** A quote, an opening or a closing bracket inside an object or array. */
  private inValue(c: string): void {
    if (c === '"' || c === "'") this.quote = c;
    else if (c === '{' || c === '[') {
      if (++this.depth > MAX_NESTING) this.refuse('JSON nesting depth limit exceeded');
    } else if (--this.depth === 0) {
      this.emit();
    }
  }

  /** The first character of a value at the top level. */
  private startValue(c: string): void {
    if (WHITESPACE.has(c)) return;
    this.text = c;
    if (c === '{' || c === '[') this.depth = 1;
    else if (c === '"' || c === "'") this.quote = c;
    else if (STRUCTURAL.has(c)) this.emit(); // a stray closer or separator: an error of its own
    else this.scalar = true;
  }

  /** Refuses the value being read, as QEMU does; the rest of its line goes too, so the next line is read afresh. */
  private refuse(error: string): void {
    this.reset();
    this.skipLine = true;
    this.onValue({ error });
  }

  private checkSize(): void {
    if (this.text.length > MAX_VALUE_BYTES) this.refuse('JSON token size limit exceeded');
  }

  private emit(): void {
    const text = this.text;
    this.reset();
    for (const item of readJsonValues(text)) this.onValue(item);
  }

  private reset(): void {
    this.text = '';
    this.depth = 0;
    this.quote = null;
    this.escaped = false;
    this.scalar = false;
  }
}
