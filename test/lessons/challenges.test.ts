/**
 * The challenges against the engine: a learner's winning play meets the
 * goal within the limit, a losing one is told why, judged on the job's
 * events alone.
 */
import { describe, expect, it } from 'vitest';
import { type Challenge, ChallengeAttempt, challengeById } from '../../src/lessons/challenges.js';
import type { AnyQmpEvent } from '../../src/qapi/events.js';
import type { MirrorOptions } from '../../src/mirror/options.js';
import { DEMO_IMAGE_BYTES, EngineSession, JOB } from '../helpers/lesson-engine.js';

type Play = (e: AnyQmpEvent, send: (name: string, args: Record<string, unknown>) => Promise<unknown>, engine: EngineSession) => void;

/** Runs a challenge with the learner's form settings and a play that answers events with commands. */
async function attempt(challenge: Challenge, options: Partial<MirrorOptions>, play: Play): Promise<{ met: boolean; why: string; commands: number }> {
  const tried = new ChallengeAttempt(challenge, DEMO_IMAGE_BYTES);
  let ended!: () => void;
  const end = new Promise<void>((r) => (ended = r));
  const engine: EngineSession = await EngineSession.open(`challenge-${challenge.id}`, challenge.setup, (e) => {
    tried.event(e);
    if (e.event === 'JOB_STATUS_CHANGE' && e.data.status === 'null') ended();
    else play(e, send, engine);
  });
  const send = async (name: string, args: Record<string, unknown>) => {
    tried.command();
    return engine.control.execute(name, args);
  };
  await engine.start({ ...challenge.setup.options, ...options });
  const timeout = setTimeout(() => void engine.control.execute('block-job-cancel', { device: JOB, force: true }), 40_000);
  await end;
  clearTimeout(timeout);
  const verdict = tried.verdict(tried.recorder.facts.ending?.kind === 'completed' ? await engine.sameContent() : null);
  await engine.close();
  return { ...verdict, commands: tried.commands };
}

const completeOnReady: Play = (e, send) => {
  if (e.event === 'BLOCK_JOB_READY') void send('job-complete', { id: JOB });
};

describe.concurrent('challenges against the engine', () => {
  const failsTwice = challengeById('fails-twice')!;
  const keepUp = challengeById('keep-up')!;

  it('fails-twice: on-target-error=ignore retries by itself; Complete is the one command', async () => {
    const r = await attempt(failsTwice, { 'on-target-error': 'ignore' }, completeOnReady);
    expect(r, r.why).toMatchObject({ met: true, commands: 1 });
    expect(r.why).toBe('completed through 2 failures with 1 command(s)');
  }, 60_000);

  it('fails-twice: stop, Resume twice, Complete: three commands, met', async () => {
    const r = await attempt(failsTwice, { 'on-target-error': 'stop' }, (e, send) => {
      if (e.event === 'JOB_STATUS_CHANGE' && e.data.status === 'paused') void send('job-resume', { id: JOB });
      completeOnReady(e, send, undefined as never);
    });
    expect(r, r.why).toMatchObject({ met: true, commands: 3 });
  }, 60_000);

  it('fails-twice: report fails at the first error; stop with a pause and resume around each failure is over the limit', async () => {
    const report = await attempt(failsTwice, { 'on-target-error': 'report' }, completeOnReady);
    expect(report).toMatchObject({ met: false, why: 'the target failed 1 time(s), not twice: keep the faults armed' });
    const chatty = await attempt(failsTwice, { 'on-target-error': 'stop' }, (e, send) => {
      if (e.event === 'JOB_STATUS_CHANGE' && e.data.status === 'paused') void send('query-block-jobs', {}).then(() => send('job-resume', { id: JOB }));
      completeOnReady(e, send, undefined as never);
    });
    expect(chatty).toMatchObject({ met: false, why: 'it took 5 commands, more than 3' });
  }, 60_000);

  it('keep-up: write-blocking reaches READY at the copy speed, and completes with the guest writing', async () => {
    const r = await attempt(keepUp, { 'copy-mode': 'write-blocking' }, completeOnReady);
    expect(r, r.why).toMatchObject({ met: true, commands: 1 });
  }, 60_000);

  it('keep-up: in background mode READY never comes while the guest writes; the learner gives up', async () => {
    const r = await attempt(keepUp, {}, (e, send) => {
      if (e.event === 'JOB_STATUS_CHANGE' && e.data.status === 'running') setTimeout(() => void send('block-job-cancel', { device: JOB, force: true }), 11_000);
    });
    expect(r).toMatchObject({ met: false, why: 'READY never came: the guest dirtied the disk faster than the job copied it' });
  }, 60_000);

  it('keep-up: lifting the speed limit also keeps up', async () => {
    const r = await attempt(keepUp, { speed: 0 }, completeOnReady);
    expect(r, r.why).toMatchObject({ met: true, commands: 1 });
  }, 60_000);
});
