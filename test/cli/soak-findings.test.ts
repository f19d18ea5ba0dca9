/**
 * What the soak found (npm run soak), each kept fixed here, through the
 * command as the soak drives it (a hang of the job's loop would stall this
 * test's own process if it ran in it).
 *
 * - A flush that always failed under on-target-error=ignore was retried in
 *   a loop that never gave the event loop a turn: the error kicked the job
 *   awake, the kick cut the backoff short, and the monitor could not read
 *   another command (x-source-write hung for good).
 */
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QmpSession, assertBuilt } from '../helpers/cli.js';
import { tempDir } from '../helpers/qemu.js';

let dir: ReturnType<typeof tempDir>;
beforeAll(() => {
  assertBuilt();
  dir = tempDir('diskmirror-soak-findings-');
});
afterAll(() => dir.remove());

describe('a flush that always fails under ignore', () => {
  it('is retried after its backoff, and the monitor keeps answering', async () => {
    const src = dir.file('src.raw');
    execFileSync('qemu-img', ['create', '-q', '-f', 'raw', src, '8M']);
    execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 7 0 8M', src], { stdio: 'ignore' });
    const s = new QmpSession(['mirror', '--qmp', '--on-target-error', 'ignore', '--inject', 'target:flush:EIO:0-', src, dir.file('dst.raw')]);
    try {
      await s.event('BLOCK_JOB_ERROR');
      await new Promise((r) => setTimeout(r, 300));
      for (let i = 0; i < 5; i++) {
        const answer = await s.execute('x-source-write', { offset: i * 65536, bytes: 4096, pattern: 9 });
        expect(answer).toHaveProperty('return');
      }
      expect(await s.execute('query-block-jobs')).toMatchObject({ return: [{ status: 'running' }] });
      const errors = s.lines.filter((l) => l.event === 'BLOCK_JOB_ERROR').length;
      // Backoff from 10 ms doubling to 1 s: a handful of errors in this time, not thousands.
      expect(errors).toBeLessThan(30);
    } finally {
      s.child.kill('SIGKILL');
      await s.exited;
    }
  });
});
