/**
 * Fault injection, in the spirit of QEMU's blkdebug: a device that wraps
 * another and fails the requests that match its rules. Rules can be added
 * and removed while I/O runs; this is how tests reproduce qemu-iotests and
 * how the app teaches what each error policy does.
 */
import { type BlockDevice, BlockError } from './block-device.js';
import { type FaultOp, type FaultRule, type FaultRuleState, validateRule } from '../qapi/faults.js';

export { type FaultOp, type FaultRule, type FaultRuleState, FAULT_OPS, validateRule } from '../qapi/faults.js';


/** A set of rules, shared by the device and image wrappers. */
export class FaultRules {
  private list: FaultRuleState[] = [];
  /** The rules that fired last, newest last (a few: requests in flight fail together). */
  private fired: FaultRuleState[] = [];

  add(rule: FaultRule): number {
    this.list.push({ ...validateRule(rule), hits: 0 });
    return this.list.length - 1;
  }

  /** Removes the rule at `index` (as listed); false if there is none. */
  remove(index: number): boolean {
    if (!Number.isInteger(index) || index < 0 || index >= this.list.length) return false;
    this.list.splice(index, 1);
    return true;
  }

  clear(): void {
    this.list = [];
  }

  get rules(): FaultRuleState[] {
    return this.list.map((r) => ({ ...r }));
  }

  /** The rule a request would meet now (the first that matches), if any. */
  firing(op: FaultOp, offset: number, bytes: number): FaultRuleState | undefined {
    const rule = this.list.find((r) => matches(r, op, offset, bytes));
    return rule && { ...rule };
  }

  /** The rule that fired last for a request like this one (also a once rule, gone since), if any. */
  firedFor(op: FaultOp, offset: number, bytes: number): FaultRuleState | undefined {
    const rule = this.fired.findLast((r) => matches(r, op, offset, bytes));
    return rule && { ...rule };
  }

  /** Throws the first matching rule's error; removes it if it fires once. */
  check(op: FaultOp, offset: number, bytes: number): void {
    const i = this.list.findIndex((r) => matches(r, op, offset, bytes));
    if (i < 0) return;
    const rule = this.list[i]!;
    rule.hits++;
    if (rule.once) this.list.splice(i, 1);
    this.fired = [...this.fired.filter((r) => r !== rule), rule].slice(-8);
    const where = rule.length === null ? `from ${rule.offset} to the end` : `${rule.offset}+${rule.length}`;
    throw new BlockError(rule.errno, op, offset, bytes, `injected fault (${op} ${where}${rule.once ? ', once' : ''})`);
  }
}

function matches(rule: FaultRule, op: FaultOp, offset: number, bytes: number): boolean {
  return rule.op === op && (op === 'flush' || overlaps(rule, offset, bytes));
}

function overlaps(rule: FaultRule, offset: number, bytes: number): boolean {
  const end = offset + Math.max(bytes, 1);
  const ruleEnd = rule.length === null ? Infinity : rule.offset + rule.length;
  return offset < ruleEnd && rule.offset < end;
}

export class FaultDevice implements BlockDevice {
  readonly faults = new FaultRules();

  constructor(readonly child: BlockDevice, rules: FaultRule[] = []) {
    for (const rule of rules) this.faults.add(rule);
  }

  get size(): number {
    return this.child.size;
  }

  get readOnly(): boolean {
    return this.child.readOnly;
  }

  async read(offset: number, into: Uint8Array): Promise<void> {
    this.faults.check('read', offset, into.length);
    return this.child.read(offset, into);
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.faults.check('write', offset, data.length);
    return this.child.write(offset, data);
  }

  async flush(): Promise<void> {
    this.faults.check('flush', 0, 0);
    return this.child.flush();
  }

  async close(): Promise<void> {
    return this.child.close();
  }

  async resize(bytes: number): Promise<void> {
    if (!this.child.resize) throw new BlockError('ENOTSUP', 'resize', 0, bytes, 'the device cannot be resized');
    return this.child.resize(bytes);
  }

  async discard(offset: number, bytes: number): Promise<void> {
    this.faults.check('write', offset, bytes);
    return this.child.discard?.(offset, bytes);
  }
}
