/**
 * The QMP-facing checks as pure functions: the request (qmp_dispatch_check_obj),
 * each command's arguments (the QAPI visitor's order and texts), the JSON
 * reader's QEMU parse errors, and plain mode's folding of repeated errors.
 */
import { describe, expect, it } from 'vitest';
import { checkArguments, checkQmpRequest, COMMAND_PARAMS, CommandError, MirrorControl } from '../../src/mirror/control.js';
import { ErrorLineFolder } from '../../src/cli/mirror-io.js';
import { readJsonValues } from '../../src/cli/qmp-json.js';

function thrown(fn: () => unknown): { class: string; desc: string } {
  try {
    fn();
  } catch (err) {
    if (err instanceof CommandError) return { class: err.qmpClass, desc: err.message };
    throw err;
  }
  throw new Error('did not throw');
}

async function rejected(p: Promise<unknown>): Promise<{ class: string; desc: string }> {
  try {
    await p;
  } catch (err) {
    if (err instanceof CommandError) return { class: err.qmpClass, desc: err.message };
    throw err;
  }
  throw new Error('did not reject');
}

describe('checkQmpRequest', () => {
  it.each([
    [null, 'QMP input must be a JSON object'],
    [[], 'QMP input must be a JSON object'],
    [7, 'QMP input must be a JSON object'],
    ['query-jobs', 'QMP input must be a JSON object'],
    [{}, "QMP input lacks member 'execute'"],
    [{ id: 1 }, "QMP input lacks member 'execute'"],
    [{ execute: 5 }, "QMP input member 'execute' must be a string"],
    [{ execute: 'query-jobs', arguments: [] }, "QMP input member 'arguments' must be an object"],
    [{ execute: 'query-jobs', arguments: null }, "QMP input member 'arguments' must be an object"],
    [{ execute: 'query-jobs', 'exec-oob': 'query-jobs' }, "QMP input member 'exec-oob' is unexpected"],
    // Members are checked in the order given, as QEMU walks the dict.
    [{ x: 1, execute: 5 }, "QMP input member 'x' is unexpected"],
  ])('%j: %s', (value, desc) => {
    expect(thrown(() => checkQmpRequest(value))).toEqual({ class: 'GenericError', desc });
  });

  it('takes execute, arguments and id; absent arguments are {}', () => {
    expect(checkQmpRequest({ execute: 'query-jobs', id: 'x' })).toEqual({ execute: 'query-jobs', arguments: {} });
    expect(checkQmpRequest({ execute: 'job-pause', arguments: { id: 'm' } })).toEqual({ execute: 'job-pause', arguments: { id: 'm' } });
  });
});

describe('checkArguments', () => {
  it.each([
    ['block-job-set-speed', { device: 'm' }, "Parameter 'speed' is missing"],
    ['block-job-set-speed', { speed: 1 }, "Parameter 'device' is missing"],
    ['block-job-set-speed', { device: 'm', speed: '1' }, "Invalid parameter type for 'speed', expected: integer"],
    ['block-job-set-speed', { device: 'm', speed: 1.5 }, "Invalid parameter type for 'speed', expected: integer"],
    ['block-job-set-speed', { device: 'm', speed: 1, x: 1 }, "Parameter 'x' is unexpected"],
    // Schema order first: a missing or mistyped member is named before an unexpected one.
    ['block-job-set-speed', { x: 1, speed: 'a' }, "Parameter 'device' is missing"],
    ['block-job-set-speed', { x: 1, device: 'm', speed: 'a' }, "Invalid parameter type for 'speed', expected: integer"],
    ['block-job-cancel', { device: 'm', force: 'yes' }, "Invalid parameter type for 'force', expected: boolean"],
    ['block-job-cancel', { device: 'm', force: null }, "Invalid parameter type for 'force', expected: boolean"],
    ['job-complete', { id: 3 }, "Invalid parameter type for 'id', expected: string"],
    ['job-complete', { device: 'm' }, "Parameter 'id' is missing"],
    ['job-complete', { id: 'm', device: 'm' }, "Parameter 'device' is unexpected"],
    ['query-jobs', { all: true }, "Parameter 'all' is unexpected"],
    ['qmp_capabilities', { enable: 'oob' }, "Invalid parameter type for 'enable', expected: array"],
    ['x-source-write', { offset: 0, bytes: '4096' }, "Invalid parameter type for 'bytes', expected: integer"],
    ['fault-add', { rule: 5 }, "Invalid parameter type for 'rule', expected: string"],
    ['job-pause', [], "QMP input member 'arguments' must be an object"],
    ['job-pause', null, "QMP input member 'arguments' must be an object"],
  ] as const)('%s %j: %s', (command, args, desc) => {
    expect(thrown(() => checkArguments(command, args))).toEqual({ class: 'GenericError', desc });
  });

  it('a member named __proto__ is a member like any other', () => {
    const args = JSON.parse('{"id":"m","__proto__":{}}') as unknown;
    expect(thrown(() => checkArguments('job-pause', args))).toEqual({ class: 'GenericError', desc: "Parameter '__proto__' is unexpected" });
  });

  it('accepts what the table allows; absent arguments are {}', () => {
    expect(checkArguments('block-job-cancel', { device: 'm' })).toEqual({ device: 'm' });
    expect(checkArguments('query-block-jobs', undefined)).toEqual({});
    expect(checkArguments('x-source-write', { offset: 0, bytes: 1, pattern: 2 })).toEqual({ offset: 0, bytes: 1, pattern: 2 });
  });

  it("QEMU's commands take QEMU 7.2's parameters", () => {
    const shape = (c: keyof typeof COMMAND_PARAMS) => COMMAND_PARAMS[c].map((p) => `${p.required ? '' : '*'}${p.name}:${p.type}`);
    expect(shape('block-job-cancel')).toEqual(['device:str', '*force:bool']);
    expect(shape('block-job-set-speed')).toEqual(['device:str', 'speed:int']);
    for (const c of ['job-pause', 'job-resume', 'job-cancel', 'job-complete', 'job-finalize', 'job-dismiss'] as const) expect(shape(c)).toEqual(['id:str']);
    for (const c of ['block-job-pause', 'block-job-resume', 'block-job-complete'] as const) expect(shape(c)).toEqual(['device:str']);
    expect(shape('query-block-jobs')).toEqual([]);
    expect(shape('query-jobs')).toEqual([]);
  });
});

describe('MirrorControl.execute', () => {
  it('an unknown command is CommandNotFound before its arguments are looked at', async () => {
    const control = new MirrorControl();
    expect(await rejected(control.execute('nope', []))).toEqual({ class: 'CommandNotFound', desc: 'The command nope has not been found' });
    expect(await rejected(control.execute('toString'))).toEqual({ class: 'CommandNotFound', desc: 'The command toString has not been found' });
  });

  it('checks arguments, then finds the job', async () => {
    const control = new MirrorControl();
    expect(await rejected(control.execute('job-pause', {}))).toEqual({ class: 'GenericError', desc: "Parameter 'id' is missing" });
    expect(await rejected(control.execute('job-pause', { id: 'm' }))).toEqual({ class: 'GenericError', desc: 'Job not found' });
    expect(await rejected(control.execute('block-job-pause', { device: 'm' }))).toEqual({ class: 'DeviceNotActive', desc: "Block job 'm' not found" });
    expect(await rejected(control.execute('fault-list', {}))).toEqual({ class: 'GenericError', desc: "Parameter 'device' is missing" });
    expect(await control.execute('query-block-jobs')).toEqual([]);
  });

  it('qmp_capabilities: no capability is offered', async () => {
    const control = new MirrorControl();
    expect(await control.execute('qmp_capabilities', {})).toEqual({});
    expect(await control.execute('qmp_capabilities', { enable: [] })).toEqual({});
    expect(await rejected(control.execute('qmp_capabilities', { enable: ['oob'] }))).toEqual({ class: 'GenericError', desc: "Capability 'oob' not available" });
    expect(await rejected(control.execute('qmp_capabilities', { enable: ['x'] }))).toEqual({
      class: 'GenericError',
      desc: "Parameter 'enable[0]' does not accept value 'x'",
    });
  });
});

describe('readJsonValues', () => {
  const error = (line: string) => readJsonValues(line).map((r) => ('error' in r ? r.error : r.value));

  it.each([
    ['hello', "JSON parse error, invalid keyword 'hello'"],
    ['True', "JSON parse error, stray 'T'"],
    ['@', "JSON parse error, stray '@'"],
    ['}', 'JSON parse error, expecting value'],
    ['{"execute":', 'JSON parse error, premature EOI'],
    ['"open', 'JSON parse error, premature EOI'],
    ['{"a" 1}', 'JSON parse error, missing : in object pair'],
    ['{a:1}', 'JSON parse error, key is not a string in object'],
    ['{"a":1 "b":2}', 'JSON parse error, expected separator in dict'],
    ['[1 2]', 'JSON parse error, expected separator in list'],
    ['"\\x"', 'JSON parse error, invalid escape sequence in string'],
    ['"\\u12"', 'JSON parse error, invalid hex escape sequence in string'],
    ['['.repeat(1025), 'JSON nesting depth limit exceeded'],
  ])('%s: %s', (line, desc) => {
    expect(error(line)).toEqual([desc]);
  });

  it('reads JSON values one after another on a line, and QEMU single-quoted strings', () => {
    expect(error('{"a":[1,-2.5e3,true,false,null]} 7 \'it\\\'s\' "\\u00e9\\n"')).toEqual([{ a: [1, -2500, true, false, null] }, 7, "it's", 'é\n']);
    expect(error('   ')).toEqual([]);
    // A parse error ends the line; values before it stand.
    expect(error('1 @ 2')).toEqual([1, "JSON parse error, stray '@'"]);
    expect(error('['.repeat(1024) + ']'.repeat(1024))).toHaveLength(1);
  });

  it('objects have no prototype: __proto__ is a plain member', () => {
    const [r] = readJsonValues('{"__proto__":{"polluted":1}}');
    const value = (r as { value: Record<string, unknown> }).value;
    expect(Object.keys(value)).toEqual(['__proto__']);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});

describe('ErrorLineFolder', () => {
  const error = (offset: number, errno = 'EIO' as const) => ({
    device: 'mirror',
    operation: 'read' as const,
    action: 'ignore' as const,
    errno,
    offset,
    bytes: 65536,
    message: 'Input/output error',
  });

  it('one line per distinct error every 5 s; the next says how many it folded', () => {
    let now = 0;
    const folder = new ErrorLineFolder(5000, () => now);
    expect(folder.line(error(0))).toBe('read error (EIO) at bytes 0-65535: Input/output error; action: ignore');
    const lines: (string | null)[] = [];
    for (now = 100; now < 5000; now += 100) lines.push(folder.line(error(0)));
    expect(lines.every((l) => l === null)).toBe(true);
    now = 4950;
    // Another range is another error: it has its own line.
    expect(folder.line(error(65536))).toMatch(/^read error \(EIO\) at bytes 65536-131071/);
    expect(folder.line(error(0, 'EIO'))).toBe(null);
    now = 5000;
    expect(folder.line(error(0))).toBe('read error (EIO) at bytes 0-65535: Input/output error; action: ignore (repeated 50 times in 5 s)');
    now = 6000;
    expect(folder.line(error(0))).toBe(null);
    now = 7000;
    // At the end, what was folded since the last line is told.
    expect(folder.flush()).toEqual(['read error (EIO) at bytes 0-65535: Input/output error; action: ignore (repeated 1 time in 2 s)']);
    expect(folder.flush()).toEqual([]);
  });
});
