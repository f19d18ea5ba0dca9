/**
 * QEMU's image locks, as its file-posix driver takes them (QEMU 7.2,
 * block/file-posix.c), so that diskmirror and QEMU refuse each other as QEMU
 * refuses itself.
 *
 * QEMU names what a user of an image does with it in permissions
 * (include/block/block-common.h): bit 0 "consistent read", bit 1 "write",
 * bit 2 "write unchanged", bit 3 "resize". For every permission it holds, it
 * takes a shared (read) lock on byte 100 + bit; for every permission it does
 * not let others have, a shared lock on byte 200 + bit. Then it tests that
 * nobody else locks byte 200 + bit of a permission it wants (nobody refuses
 * it) and nobody else locks byte 100 + bit of one it refuses (nobody has it);
 * the first test that fails is the error: `Failed to get "write" lock`, or
 * `Failed to get shared "write" lock`. Only shared locks are ever taken, so
 * holders never block each other in the kernel: the tests decide.
 *
 * What diskmirror takes is what QEMU takes in the same role, as seen in the
 * kernel's lock table while QEMU 7.2 runs:
 * - a reader (a source, info, compare, check, map; a backing file) is
 *   qemu-img convert's source: consistent read, and write and resize not
 *   shared (bytes 100, 201, 203). qemu-img's info, compare and map share
 *   writes on a raw image (and info takes nothing); diskmirror's readers do
 *   not, whatever the format: what they read is to mean something.
 * - a writer (a mirror's or convert's target, a source the job writes) is
 *   qemu-img convert's qcow2 target, or qemu-io and qemu-nbd writing a
 *   qcow2 image: consistent read, write and resize, and write and resize
 *   not shared (bytes 100, 101, 103, 201, 203). QEMU's writers share writes
 *   on a raw image; diskmirror's do not, whatever the format (a copy that
 *   somebody else writes meanwhile is no copy). Consistent read stays
 *   shared, as there: a reader that says it bears writers (qemu-io -r on a
 *   raw image, qemu-img -U) may look.
 */
import type { LockMode } from './block-device.js';

/** QEMU's permission names, by bit (bdrv_perm_names). */
export const QEMU_PERMISSIONS = ['consistent read', 'write', 'write unchanged', 'resize'] as const;
export type QemuPermission = (typeof QEMU_PERMISSIONS)[number];

/** RAW_LOCK_PERM_BASE and RAW_LOCK_SHARED_BASE. */
export const PERMISSION_BYTE_BASE = 100;
export const UNSHARED_BYTE_BASE = 200;

/** What a user of an image holds, and what it refuses to share. */
export interface QemuAccess {
  holds: readonly QemuPermission[];
  unshared: readonly QemuPermission[];
}

export const READER_ACCESS: QemuAccess = { holds: ['consistent read'], unshared: ['write', 'resize'] };
export const WRITER_ACCESS: QemuAccess = { holds: ['consistent read', 'write', 'resize'], unshared: ['write', 'resize'] };

export function accessFor(mode: LockMode): QemuAccess {
  return mode === 'shared' ? READER_ACCESS : WRITER_ACCESS;
}

const bit = (permission: QemuPermission): number => QEMU_PERMISSIONS.indexOf(permission);

/** The bytes a user of `access` locks (shared), ascending. */
export function lockedBytes(access: QemuAccess): number[] {
  return [...access.holds.map((p) => PERMISSION_BYTE_BASE + bit(p)), ...access.unshared.map((p) => UNSHARED_BYTE_BASE + bit(p))].sort((a, b) => a - b);
}

/** One of QEMU's tests: somebody else locking `byte` refuses the open. */
export interface LockTest {
  byte: number;
  permission: QemuPermission;
  /** true: somebody holds `permission`, which we do not share ("Failed to get shared ..."). */
  shared: boolean;
}

/** The bytes QEMU tests for `access`, in its order (raw_check_lock_bytes). */
export function lockTests(access: QemuAccess): LockTest[] {
  const tests: LockTest[] = [];
  for (const permission of QEMU_PERMISSIONS) {
    if (access.holds.includes(permission)) tests.push({ byte: UNSHARED_BYTE_BASE + bit(permission), permission, shared: false });
  }
  for (const permission of QEMU_PERMISSIONS) {
    if (access.unshared.includes(permission)) tests.push({ byte: PERMISSION_BYTE_BASE + bit(permission), permission, shared: true });
  }
  return tests;
}
