/**
 * Fault rules as people write them: SIDE:OP:ERRNO:RANGE[:once]
 *
 *   source:read:EIO:1M:once        any source read covering byte 1 MiB, once
 *   target:write:ENOSPC:2M-        every target write from 2 MiB to the end
 *   target:write:EIO:64K+4K        target writes touching [64 KiB, 68 KiB)
 *   target:flush:EIO:0             every target flush (the range is ignored)
 *
 * A rule as data (FaultRule) and as words (FaultSpec's text) are the page's
 * and the engine's alike; block/fault.ts makes a device fail by them.
 */
import { type Errno, isErrno } from './errors.js';
import { parseSize } from '../util/size.js';

export type FaultOp = 'read' | 'write' | 'flush';
export const FAULT_OPS: readonly FaultOp[] = ['read', 'write', 'flush'];

export interface FaultRule {
  op: FaultOp;
  errno: Errno;
  /** First byte of the faulty range (ignored for flush). */
  offset: number;
  /** Bytes in the range; null means "from offset to the end". */
  length: number | null;
  /** Fire once, then disappear. */
  once: boolean;
}

/** A rule as listed, with how often it fired. */
export interface FaultRuleState extends FaultRule {
  hits: number;
}

export function validateRule(rule: FaultRule): FaultRule {
  if (!FAULT_OPS.includes(rule.op)) throw new RangeError(`fault operation "${rule.op}": must be read, write or flush`);
  if (!isErrno(rule.errno)) throw new RangeError(`fault errno "${rule.errno}": not a known code`);
  if (!Number.isSafeInteger(rule.offset) || rule.offset < 0) throw new RangeError(`fault offset ${rule.offset}: must be a non-negative integer`);
  if (rule.length !== null && (!Number.isSafeInteger(rule.length) || rule.length <= 0)) {
    throw new RangeError(`fault length ${rule.length}: must be a positive integer, or null for "to the end"`);
  }
  return { op: rule.op, errno: rule.errno, offset: rule.offset, length: rule.length, once: Boolean(rule.once) };
}

export type FaultSide = 'source' | 'target';

export interface FaultSpec {
  side: FaultSide;
  rule: FaultRule;
}

export function parseFaultSpec(text: string): FaultSpec {
  const parts = String(text).trim().split(':');
  const usage = `fault rule "${text}": expected SIDE:OP:ERRNO:RANGE[:once], e.g. source:read:EIO:1M:once`;
  if (parts.length < 4 || parts.length > 5) throw new RangeError(usage);
  const [side, op, errno, range, once] = parts as [string, string, string, string, string | undefined];
  if (side !== 'source' && side !== 'target') throw new RangeError(`${usage}; side "${side}" must be source or target`);
  if (!FAULT_OPS.includes(op as FaultOp)) throw new RangeError(`${usage}; operation "${op}" must be read, write or flush`);
  const code = errno.toUpperCase();
  if (!isErrno(code)) throw new RangeError(`${usage}; errno "${errno}" is not one of EIO, ENOSPC, EPERM, EACCES, ...`);
  if (once !== undefined && once !== 'once') throw new RangeError(`${usage}; the fifth part may only be "once"`);
  let offset: number;
  let length: number | null;
  if (range.endsWith('-')) {
    offset = parseSize(range.slice(0, -1), 'fault offset');
    length = null;
  } else if (range.includes('+')) {
    const [o, l] = range.split('+') as [string, string];
    offset = parseSize(o, 'fault offset');
    length = parseSize(l, 'fault length');
  } else {
    offset = parseSize(range, 'fault offset');
    length = 1;
  }
  return { side, rule: validateRule({ op: op as FaultOp, errno: code, offset, length, once: once === 'once' }) };
}

export function formatFaultSpec(spec: FaultSpec): string {
  const { rule } = spec;
  const range = rule.length === null ? `${rule.offset}-` : rule.length === 1 ? `${rule.offset}` : `${rule.offset}+${rule.length}`;
  return `${spec.side}:${rule.op}:${rule.errno}:${range}${rule.once ? ':once' : ''}`;
}

/**
 * The fault rule behind a BLOCK_JOB_ERROR, as the worker knows it: the rule
 * that fired, or one still armed over the same range; `armed`: Resume meets
 * it again.
 */
export interface FaultFacts {
  rule: string;
  armed: boolean;
}
