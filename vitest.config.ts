import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

/**
 * The `rest` project: suites that need something from outside this process,
 * or a long while (the fast lane is kept to about a minute of CPU, half that
 * on two idle cores). Each says what; a suite missing its program fails,
 * never skips, naming it and how to install it (test/helpers/require-program.ts).
 * Everything else is `fast`: pure Node (the kernel, the mirror engine on
 * memory devices, properties, lessons, qcow2 on memory devices, the
 * checkpoint stores, the page's job store and words, the scripts), run by
 * `npm run test:fast`. A new suite is fast unless it is listed here.
 */
const REST: Record<string, string> = {
  'test/cli/chains.test.ts': 'the built command, qemu-img, qemu-io',
  'test/cli/code-cache.test.ts': 'the built command',
  'test/cli/data-safety.test.ts': 'the built command, qemu-img, qemu-io',
  'test/cli/format-commands.test.ts': 'the built command, qemu-img, qemu-io',
  'test/cli/format-kill.test.ts': 'the built command, qemu-img',
  'test/cli/mirror.test.ts': 'the built command, qemu-img, qemu-io',
  'test/cli/nbd.test.ts': 'the built command, qemu-img, qemu-io, qemu-nbd, nbdkit',
  'test/cli/qemu-differential.test.ts': 'the built command, qemu-system-x86_64, qemu-img, qemu-io',
  'test/cli/qemu-locks.test.ts': 'the built command, qemu-img, qemu-io, qemu-nbd',
  'test/cli/qemu-parity.test.ts': 'the built command, qemu-img, qemu-io',
  'test/cli/qmp-socket.test.ts': 'the built command, qemu-system-x86_64, qemu-img, qemu-io',
  'test/cli/qmp.test.ts': 'the built command, qemu-img, qemu-io',
  'test/contract/nbd-devices.test.ts': 'nbdkit, websockify',
  'test/format/hostile-bounds.test.ts': 'qemu-img, qemu-io',
  'test/format/qcow2-corrupt.test.ts': 'qemu-img, qemu-io',
  'test/format/qcow2-crash.test.ts': 'qemu-img',
  'test/format/qcow2-read.test.ts': 'qemu-img, qemu-io',
  'test/format/qcow2-write.test.ts': 'qemu-img, qemu-io',
  'test/format/repair.test.ts': 'qemu-img, qemu-io',
  'test/format/vpc-vdi-crash.test.ts': 'qemu-img, qemu-io',
  'test/format/vpc-vdi-hostile.test.ts': 'the built command, qemu-img, qemu-io',
  'test/format/vpc-vdi-read.test.ts': 'the built command, qemu-img, qemu-io',
  'test/format/vpc-vdi-write.test.ts': 'the built command, qemu-img, qemu-io',
  'test/format/vhdx.test.ts': 'the built command, qemu-img, qemu-io',
  'test/format/vhdx-hostile.test.ts': 'the built command, qemu-img, qemu-io',
  'test/format/vhdx-log.test.ts': 'the built command, qemu-img, qemu-io',
  'test/format/vmdk-read.test.ts': 'the built command, qemu-img, qemu-io, tar',
  'test/format/vmdk-write.test.ts': 'the built command, qemu-img, qemu-io',
  'test/format/vmdk-hostile.test.ts': 'the built command, qemu-img, qemu-io',
  'test/properties/qcow2.property.test.ts': 'qemu-img',
  'test/mirror/crash-points.test.ts': 'nothing from outside, but over a minute alone: every crash point of whole runs',
  'test/block/nbd-client.test.ts': 'nothing from outside, but some 5 s of CPU: a 256 KiB write and read in one-byte NBD requests',
  'test/guest/boot.test.ts': 'the guest files (npm run guest) and qemu-img; minutes of CPU: boots Linux under v86',
  'test/format/node-deflate.test.ts': "nothing from outside, but some 10 s of CPU: Node's zlib against the portable codec over sweeps of streams",
};

const ALL = 'test/**/*.test.ts';

export default defineConfig({
  test: {
    // The suites wait on qemu-img, child processes and timers more than on the CPU: two at a time even on two cores.
    maxWorkers: Math.max(2, availableParallelism()),
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default'],
    projects: [
      { extends: true, test: { name: 'fast', include: [ALL], exclude: Object.keys(REST) } },
      { extends: true, test: { name: 'rest', include: Object.keys(REST) } },
    ],
  },
});
