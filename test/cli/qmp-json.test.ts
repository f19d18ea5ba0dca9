/** The QMP input stream cut into values as QEMU's json-streamer cuts it. */
import { describe, expect, it } from 'vitest';
import { type JsonItem, JsonStream, MAX_VALUE_BYTES, readJsonValues } from '../../src/cli/qmp-json.js';
import { rng } from '../helpers/random.js';

function feed(...chunks: string[]): JsonItem[] {
  const items: JsonItem[] = [];
  const stream = new JsonStream((item) => items.push(item));
  for (const chunk of chunks) stream.push(chunk);
  stream.end();
  return items;
}

describe('JsonStream', () => {
  it('values with no newline between them, and a value split across chunks at any point', () => {
    const text = '{"execute":"a"}{"execute":"b","arguments":{"x":[1,{"y":"}{"}]}} {"execute":\'c\'}';
    const whole = feed(text);
    expect(whole).toEqual([{ value: { execute: 'a' } }, { value: { execute: 'b', arguments: { x: [1, { y: '}{' }] } } }, { value: { execute: 'c' } }]);
    for (let cut = 1; cut < text.length; cut++) expect(feed(text.slice(0, cut), text.slice(cut)), `cut at ${cut}`).toEqual(whole);
  });

  it('top-level scalars end at a delimiter; escapes in strings do not end them', () => {
    expect(feed('null 42\n"a\\"}"true')).toEqual([{ value: null }, { value: 42 }, { value: 'a"}' }, { value: true }]);
  });

  it('errors are values of their own, and reading goes on', () => {
    expect(feed('} {"a" 1} hello {"execute":"x"}')).toEqual([
      { error: 'JSON parse error, expecting value' },
      { error: 'JSON parse error, missing : in object pair' },
      { error: "JSON parse error, invalid keyword 'hello'" },
      { value: { execute: 'x' } },
    ]);
  });

  it('input that ends inside a value: premature EOI', () => {
    expect(feed('{"execute":')).toEqual([{ error: 'JSON parse error, premature EOI' }]);
  });

  it('too deep: refused, and the rest of its line dropped, so the next line is read', () => {
    expect(feed(`${'['.repeat(2000)}\n{"execute":"x"}`)).toEqual([{ error: 'JSON nesting depth limit exceeded' }, { value: { execute: 'x' } }]);
  });

  it('a value larger than QEMU allows is refused, not buffered whole', () => {
    const items: JsonItem[] = [];
    const stream = new JsonStream((item) => items.push(item));
    stream.push('{"a":"');
    const piece = 'x'.repeat(1 << 20);
    for (let i = 0; i <= MAX_VALUE_BYTES >> 20; i++) stream.push(piece);
    expect(items).toEqual([{ error: 'JSON token size limit exceeded' }]);
  });

  it("more tokens than QEMU takes in one value: refused with QEMU's text; the closing token of a value at the limit is still taken", () => {
    const MAX_TOKEN_COUNT = 2 << 20; // QEMU's, in qobject/json-streamer.c
    // [1,1,...,1] holds 2n+1 tokens: at n = MAX/2 only the closing bracket is past the limit (taken, as QEMU takes it); one more 1 is not.
    const array = (n: number) => `[${'1,'.repeat(n - 1)}1]`;
    expect(feed(`${array(MAX_TOKEN_COUNT / 2 + 1)}\n[2]`)).toEqual([{ error: 'JSON token count limit exceeded' }, { value: [2] }]);
    const [atLimit] = feed(array(MAX_TOKEN_COUNT / 2));
    expect('value' in atLimit! && (atLimit.value as unknown[]).length).toBe(MAX_TOKEN_COUNT / 2);
  });

  it('strings with escapes anywhere, split anywhere, read as JSON.parse reads them', () => {
    const next = rng(2121);
    const alphabet = ['a', 'Z', ' ', '"', '\\', '/', '\n', '\t', '\u0001', 'é', '€', '😀', '}', '['];
    for (let round = 0; round < 40; round++) {
      const length = round < 4 ? 20_000 + Math.floor(next() * 20_000) : Math.floor(next() * 200);
      const value = Array.from({ length }, () => alphabet[Math.floor(next() * alphabet.length)]).join('');
      const text = JSON.stringify({ execute: 'x', arguments: { s: value } });
      expect(readJsonValues(text)).toEqual([{ value: { execute: 'x', arguments: { s: value } } }]);
      const cut = Math.floor(next() * text.length);
      expect(feed(text.slice(0, cut), text.slice(cut))).toEqual([{ value: { execute: 'x', arguments: { s: value } } }]);
    }
  });
});

