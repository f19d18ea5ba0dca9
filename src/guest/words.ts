/**
 * What the guest built by `npm run guest` prints on its serial console, for
 * the code that watches it (its /init and shell are made from these).
 */

/** The line the guest's /init prints once /dev/sda is there (followed by the disk's size). */
export const GUEST_READY_LINE = 'diskmirror-guest: ready';
/** The guest shell's prompt. */
export const GUEST_PROMPT = 'guest# ';
