/** The QMP input stream cut into values as QEMU's json-streamer cuts it. */
import { describe, expect, it } from 'vitest';
import { type JsonItem, JsonStream, MAX_VALUE_BYTES } from '../../src/cli/qmp-json.js';

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
});
