/*
 * Memory for I/O. Devices read straight into linear memory and write from
 * it, so the zero scan and the copy need no extra pass over the data.
 *
 * A pool is one slab of `nbSlots` slots of `slotBytes` each (64-byte aligned)
 * and a stack of free slot indices. Take and give are O(1). The job sizes its
 * pool when it starts, so memory does not grow while I/O is in flight.
 */

// Pool header layout (bytes).
const P_SLAB: usize = 0; // usize: the slab as allocated
const P_BASE: usize = 4; // usize: first slot, 64-byte aligned
const P_SLOT_BYTES: usize = 8; // u32
const P_NB_SLOTS: usize = 12; // u32
const P_NB_FREE: usize = 16; // u32
const P_STACK: usize = 20; // u32[nbSlots]: free slot indices

/** Unmanaged allocation for callers that size their own buffers. */
export function alloc(bytes: usize): usize {
  return heap.alloc(bytes);
}

export function free(ptr: usize): void {
  heap.free(ptr);
}

/** A pool of `nbSlots` buffers of `slotBytes`; 0 if the sizes are invalid. */
export function poolNew(slotBytes: u32, nbSlots: u32): usize {
  if (slotBytes == 0 || nbSlots == 0) return 0;
  const total = <u64>slotBytes * <u64>nbSlots + 64;
  if (total > 0x3ff00040) return 0; // the heap's largest block is 1 GiB
  const h = heap.alloc(P_STACK + (<usize>nbSlots << 2));
  const slab = heap.alloc(<usize>total);
  store<u32>(h + P_SLAB, <u32>slab);
  store<u32>(h + P_BASE, <u32>((slab + 63) & ~<usize>63));
  store<u32>(h + P_SLOT_BYTES, slotBytes);
  store<u32>(h + P_NB_SLOTS, nbSlots);
  store<u32>(h + P_NB_FREE, nbSlots);
  for (let i: u32 = 0; i < nbSlots; i++) {
    store<u32>(h + P_STACK + (<usize>i << 2), nbSlots - 1 - i);
  }
  return h;
}

/** A free slot's address, or 0 when all are taken. */
export function poolTake(h: usize): usize {
  const nbFree = load<u32>(h + P_NB_FREE);
  if (nbFree == 0) return 0;
  const slot = load<u32>(h + P_STACK + (<usize>(nbFree - 1) << 2));
  store<u32>(h + P_NB_FREE, nbFree - 1);
  return <usize>load<u32>(h + P_BASE) + <usize>slot * <usize>load<u32>(h + P_SLOT_BYTES);
}

/** Returns a slot taken from this pool; false if `ptr` is not one. */
export function poolGive(h: usize, ptr: usize): bool {
  const base = <usize>load<u32>(h + P_BASE);
  const slotBytes = <usize>load<u32>(h + P_SLOT_BYTES);
  const nbSlots = load<u32>(h + P_NB_SLOTS);
  const nbFree = load<u32>(h + P_NB_FREE);
  if (ptr < base || (ptr - base) % slotBytes != 0) return false;
  const slot = <u32>((ptr - base) / slotBytes);
  if (slot >= nbSlots || nbFree >= nbSlots) return false;
  store<u32>(h + P_STACK + (<usize>nbFree << 2), slot);
  store<u32>(h + P_NB_FREE, nbFree + 1);
  return true;
}

export function poolFreeSlots(h: usize): u32 {
  return load<u32>(h + P_NB_FREE);
}

export function poolFree(h: usize): void {
  heap.free(<usize>load<u32>(h + P_SLAB));
  heap.free(h);
}
