/** The two locks of a qcow2 image: one for metadata, and guest cluster ranges for writers. */

/** Runs functions one at a time, in order (QEMU's s->lock). Not reentrant. */
export class Mutex {
  private tail: Promise<void> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn);
    this.tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }
}

interface Held {
  first: number;
  end: number;
  done: Promise<void>;
}

/**
 * Exclusive locks on ranges of guest clusters: writes, zeroing and
 * discards of overlapping clusters wait for each other, so one cluster is
 * never allocated twice and a cluster is not freed under a write.
 */
export class RangeLocks {
  private readonly held = new Set<Held>();

  async acquire(first: number, end: number): Promise<() => void> {
    for (;;) {
      let overlap: Held | undefined;
      for (const h of this.held) {
        if (h.first < end && first < h.end) {
          overlap = h;
          break;
        }
      }
      if (!overlap) break;
      await overlap.done;
    }
    let release!: () => void;
    const held: Held = { first, end, done: new Promise<void>((resolve) => (release = resolve)) };
    this.held.add(held);
    return () => {
      this.held.delete(held);
      release();
    };
  }
}
