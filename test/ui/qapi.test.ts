/**
 * The vocabulary between page and worker (src/qapi): a wrong command or
 * argument does not compile in the page (the @ts-expect-error lines below
 * fail `npm run typecheck` if it ever does), and the fault rule behind a
 * stop is the fault device's own match, told with the event.
 */
import { describe, expect, it } from 'vitest';
import { FaultRules } from '../../src/block/fault.js';
import { faultFacts } from '../../src/mirror/control.js';
import type { ListedFault } from '../../src/qapi/commands.js';
import { parseFaultSpec } from '../../src/qapi/faults.js';
import type { WorkerRemote } from '../../src/ui/bridge.js';

/** The page's execute, as bridge.ts gives it. */
declare const worker: WorkerRemote;
const execute: WorkerRemote['execute'] = (command, args) => worker.execute(command, args);

// Never called: only compiled.
export async function typedCalls(): Promise<void> {
  const rules: ListedFault[] = await execute('fault-list', { device: 'job0' });
  void rules;
  await execute('fault-remove', { device: 'job0', all: true });
  await execute('block-job-cancel', { device: 'job0', force: true });
  // @ts-expect-error: no such command
  await execute('job-paws', { id: 'job0' });
  // @ts-expect-error: job-pause takes id, not device
  await execute('job-pause', { device: 'job0' });
  // @ts-expect-error: speed is an integer
  await execute('block-job-set-speed', { device: 'job0', speed: '1M' });
  // @ts-expect-error: fault-add answers the rule it added, not a list
  const wrong: ListedFault[] = await execute('fault-add', { device: 'job0', rule: 'source:read:EIO:0' });
  void wrong;
}

function faults(source: string[], target: string[] = []) {
  const f = { source: new FaultRules(), target: new FaultRules() };
  for (const r of [...source, ...target]) {
    const spec = parseFaultSpec(r);
    f[spec.side].add(spec.rule);
  }
  return f;
}

function fire(rules: FaultRules, op: 'read' | 'write', offset: number, bytes: number): void {
  expect(() => rules.check(op, offset, bytes)).toThrow(/injected fault/);
}

describe('the fault rule behind an error', () => {
  it('a rule that stays: named and still armed (Resume meets it again)', () => {
    const f = faults([], ['target:write:ENOSPC:2097152-']);
    fire(f.target, 'write', 3 << 20, 65536);
    expect(faultFacts(f, { operation: 'write', offset: 3 << 20, bytes: 65536 })).toEqual({ rule: 'target:write:ENOSPC:2097152-', armed: true });
  });

  it('a rule that fired once: named, no longer armed', () => {
    const f = faults(['source:read:EIO:1048576:once']);
    fire(f.source, 'read', 1 << 20, 65536);
    expect(f.source.rules).toEqual([]);
    expect(faultFacts(f, { operation: 'read', offset: 1 << 20, bytes: 65536 })).toEqual({ rule: 'source:read:EIO:1048576:once', armed: false });
  });

  it('another rule over the same range, still there: that one is armed', () => {
    const f = faults(['source:read:EIO:1048576:once', 'source:read:EIO:1048576+4096']);
    fire(f.source, 'read', 1 << 20, 65536);
    expect(faultFacts(f, { operation: 'read', offset: 1 << 20, bytes: 65536 })).toEqual({ rule: 'source:read:EIO:1048576+4096', armed: true });
  });

  it('no rule behind it (a real error), or one on the other side or operation: null', () => {
    const f = faults(['source:read:EIO:0-'], ['target:flush:EIO:0']);
    expect(faultFacts(f, { operation: 'write', offset: 0, bytes: 65536 })).toBeNull();
    expect(faultFacts(faults([]), { operation: 'read', offset: 0, bytes: 512 })).toBeNull();
  });
});
