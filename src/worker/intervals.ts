/** How often a job of the page stores its checkpoint (the lessons' Node test runs them at this interval too). */
export const CHECKPOINT_INTERVAL_SECONDS = 2;
