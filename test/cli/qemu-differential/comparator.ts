/**
 * The differential test's comparator: what may differ between QEMU's run of
 * a scenario and diskmirror's, and why (ALLOWED, each with its reason), and
 * every other difference as lines for a person.
 */
import type { Json, QmpEvent } from '../../helpers/qemu-mirror.js';
import type { AllowId, Scenario } from './scenarios.js';
import { diskmirrorArgs, type Outcome, SKIPPED, type SideRun } from './runner.js';

// ---- what may differ, and why ----------------------------------------------------------

interface RecordedEvent {
  /** Its index among all the side's events (marks are such indexes). */
  index: number;
  event: string;
  /** The members compared, keys sorted. */
  data: Json;
}

const eventText = (e: RecordedEvent) => `${e.event} ${JSON.stringify(e.data)}`;

interface Allowance {
  reason: string;
  /** Rewrites one side's events before they are compared. */
  apply(events: RecordedEvent[], marks: Map<string, number>, sc: Scenario): RecordedEvent[];
}

/** Allowed in every scenario: these BLOCK_JOB_ERROR members are not compared (QEMU has none of them). */
export const EXTRA_ERROR_MEMBERS = {
  members: ['errno', 'offset', 'bytes', 'message'],
  reason:
    "diskmirror's BLOCK_JOB_ERROR adds errno, offset, bytes and message so a person can see which range failed and why (MIRROR-SEMANTICS.md, Events); QEMU's own members, device, operation and action, are compared",
};

export const ALLOWED: Record<AllowId, Allowance> = {
  'error-repeats-under-ignore': {
    reason:
      'under ignore with a persistent error QEMU retries the range on every iteration with no delay (one BLOCK_JOB_ERROR each, thousands a second); diskmirror backs off per range (MIRROR-SEMANTICS.md, Error policy) and emits one per retry: a run of identical BLOCK_JOB_ERROR events counts as one, and each side must have at least one',
    apply: (events) => events.filter((e, i) => !(e.event === 'BLOCK_JOB_ERROR' && i > 0 && eventText(events[i - 1]!) === eventText(e))),
  },
};

/**
 * Not an allowance for diskmirror: what QEMU itself does differently from
 * run to run. These events are left out of QEMU's side only, so diskmirror
 * emitting them would still be a difference.
 */
export const QEMU_NONDETERMINISM = {
  reason:
    'a force cancel resumes a job stopped by an error for a moment before it aborts, and in that moment QEMU may or may not meet the error again (iotest 229 filters these BLOCK_JOB_ERROR events out for that reason); diskmirror never issues I/O after a cancel',
  apply: (events: RecordedEvent[], marks: Map<string, number>): RecordedEvent[] => {
    const from = marks.get('force-cancel');
    return from === undefined ? events : events.filter((e) => e.index < from || e.event !== 'BLOCK_JOB_ERROR');
  },
};

// ---- comparing -------------------------------------------------------------------------

/** The event as compared. */
function comparedEvent(e: QmpEvent, index: number, endOffsetSettled: boolean): RecordedEvent {
  const data: Json = {};
  for (const key of Object.keys(e.data ?? {}).sort()) {
    if (e.event === 'BLOCK_JOB_ERROR' && EXTRA_ERROR_MEMBERS.members.includes(key)) continue;
    if (key === 'offset' && !endOffsetSettled && (e.event === 'BLOCK_JOB_COMPLETED' || e.event === 'BLOCK_JOB_CANCELLED')) continue;
    data[key] = e.data[key];
  }
  return { index, event: e.event, data };
}

function comparedEvents(sc: Scenario, r: SideRun): RecordedEvent[] {
  let events = r.events.map((e, i) => comparedEvent(e, i, !sc.endOffsetUnsettled));
  for (const allowId of sc.allow ?? []) events = ALLOWED[allowId].apply(events, r.marks, sc);
  if (r.side === 'qemu' && sc.qemuMayRetryAfterForceCancel) events = QEMU_NONDETERMINISM.apply(events, r.marks);
  return events;
}

const show = (v: unknown) => (typeof v === 'string' ? v : JSON.stringify(v));
const completedWell = (r: SideRun) => r.events.some((e) => e.event === 'BLOCK_JOB_COMPLETED' && e.data.error === undefined);

/** Every difference no allowance covers, as lines for a person. */
export function differences(o: Outcome): string[] {
  const out: string[] = [];
  const { scenario: sc, qemu, ours } = o;
  if (qemu.abandoned) out.push(`QEMU did not get through the scenario (${qemu.abandoned}): the scenario is wrong, not diskmirror`);
  for (let i = 0; i < Math.max(qemu.steps.length, ours.steps.length); i++) {
    const q = qemu.steps[i];
    const d = ours.steps[i];
    if (d?.value === SKIPPED) continue;
    if (q && d && q.label === d.label && JSON.stringify(q.value) === JSON.stringify(d.value)) continue;
    out.push(
      `step ${i + 1}, ${q?.label ?? d?.label}:\n      QEMU:       ${q ? show(q.value) : '(not reached)'}\n      diskmirror: ${d ? show(d.value) : `(not reached${ours.abandoned ? `: ${ours.abandoned}` : ''})`}`,
    );
    if (!q || !d || q.label !== d.label) break;
  }
  const qe = comparedEvents(sc, qemu).map(eventText);
  const de = comparedEvents(sc, ours).map(eventText);
  if (sc.allow?.includes('error-repeats-under-ignore')) {
    for (const [who, list] of [['QEMU', qe], ['diskmirror', de]] as const) {
      if (!list.some((t) => t.startsWith('BLOCK_JOB_ERROR'))) out.push(`${who} emitted no BLOCK_JOB_ERROR at all`);
    }
  }
  if (JSON.stringify(qe) !== JSON.stringify(de)) {
    const at = qe.findIndex((t, i) => t !== de[i]);
    const first = at === -1 ? qe.length : at;
    const list = (l: string[]) => l.slice(first, first + 6).join('\n                  ') || '(nothing more)';
    out.push(`events differ from #${first + 1}:\n      QEMU:       ${list(qe)}\n      diskmirror: ${list(de)}`);
  }
  // Where QEMU's job completed its target is a copy of the source: diskmirror's must be that copy too.
  if (completedWell(qemu)) {
    if (qemu.imagesEqual !== ours.imagesEqual) out.push(`target equals source afterwards: QEMU ${String(qemu.imagesEqual)}, diskmirror ${String(ours.imagesEqual)}`);
    if (!o.targetsEqual) out.push("QEMU's target and diskmirror's differ");
  }
  return out;
}

export function report(o: Outcome, diffs: string[]): string {
  const events = (r: SideRun) =>
    comparedEvents(o.scenario, r)
      .map(eventText)
      .join('\n    ');
  const steps = (r: SideRun) => r.steps.map((s) => `${s.label} -> ${show(s.value)}`).join('\n    ');
  const skipped = o.ours.steps.filter((s) => s.value === SKIPPED).length;
  return [
    `${o.scenario.name}: ${diffs.length} difference(s)`,
    ...diffs.map((d) => `  - ${d}`),
    `  QEMU events:\n    ${events(o.qemu)}`,
    `  diskmirror events:\n    ${events(o.ours)}`,
    `  QEMU steps:\n    ${steps(o.qemu)}`,
    `  diskmirror steps:\n    ${steps(o.ours)}`,
    `  diskmirror ${diskmirrorArgs(o.scenario, { source: 'SRC', target: 'DST' }).join(' ')}`,
    o.ours.stderr.trim() ? `  diskmirror stderr: ${o.ours.stderr.trim()}` : '',
    skipped > 0 ? `  (diskmirror opened without a QMP greeting: ${skipped} step(s) after its job skipped)` : '',
  ]
    .filter(Boolean)
    .join('\n');
}
