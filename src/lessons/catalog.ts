/** Every lesson, in the order the page lists them. */
import type { Lesson } from './lesson.js';
import { afterReady } from './catalog/after-ready.js';
import { autoEio } from './catalog/auto-eio.js';
import { backgroundGuest } from './catalog/background-guest.js';
import { enospc } from './catalog/enospc.js';
import { forceCancel } from './catalog/force-cancel.js';
import { granularity } from './catalog/granularity.js';
import { ignore } from './catalog/ignore.js';
import { report } from './catalog/report.js';
import { resume } from './catalog/resume.js';
import { sides } from './catalog/sides.js';
import { softCancel } from './catalog/soft-cancel.js';
import { stop } from './catalog/stop.js';
import { writeBlocking } from './catalog/write-blocking.js';

export const LESSONS: readonly Lesson[] = [report, ignore, stop, enospc, autoEio, sides, afterReady, backgroundGuest, writeBlocking, softCancel, forceCancel, resume, granularity];

export function lessonById(id: string): Lesson | undefined {
  return LESSONS.find((l) => l.id === id);
}
