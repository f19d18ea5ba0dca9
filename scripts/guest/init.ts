/**
 * The guest's user space: busybox's shell scripts put in the initramfs. /init
 * mounts what the shell needs, loads the disk modules, waits for /dev/sda,
 * says `diskmirror-guest: ready` on the serial console (the kernel's
 * console=ttyS0) and keeps a shell there. Two commands exercise the disk:
 * `dmload SECONDS` writes patterned 64 KiB blocks across it, each with
 * `dd conv=fsync` and a line naming where and what (its sha256), and
 * `dmsum` prints the sha256 of the whole disk read back from the device.
 */

import { GUEST_PROMPT, GUEST_READY_LINE } from '../../src/guest/words.js';

export const INIT = `#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp
echo "diskmirror-guest: loading $(wc -l < /etc/modules) modules"
while read -r m; do
  insmod "/lib/modules/$m.ko" || echo "diskmirror-guest: insmod $m failed"
done < /etc/modules
i=0
while [ ! -b /dev/sda ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
if [ -b /dev/sda ]; then
  echo "${GUEST_READY_LINE} /dev/sda $(blockdev --getsize64 /dev/sda) bytes"
else
  echo "diskmirror-guest: no disk (/dev/sda did not appear in 30 s)"
fi
export PS1='${GUEST_PROMPT}' HOME=/root
cd /root
# The shell is respawned if it exits: init must not end (the kernel would panic).
while true; do setsid cttyhack sh; done
`;

export const DMLOAD = `#!/bin/sh
# dmload SECONDS: for SECONDS seconds, writes 64 KiB blocks of text across
# /dev/sda (a stride of 97 blocks visits every block before one repeats),
# each with dd conv=fsync, printing each write's block, offset and sha256.
# Each block starts with a line naming the run, the write and the block.
# (A process costs the emulated guest a good part of a second: few per write.)
secs=\${1:?usage: dmload SECONDS}
dev=/dev/sda
bs=65536
size=$(blockdev --getsize64 $dev) || exit 1
blocks=$((size / bs))
[ "$blocks" -gt 0 ] || { echo "dmload: $dev is smaller than one block"; exit 1; }
stride=97
[ $((blocks % stride)) -eq 0 ] && stride=89
run=$$
idx=$((run % blocks))
yes "dmload run $run" | head -c $bs > /tmp/dmload.pat
n=0
start=$(date +%s)
end=$((start + secs))
while [ "$(date +%s)" -lt $end ]; do
  # A line naming the write, then the run's pattern up to $bs bytes.
  line="dmload run $run write $n block $idx"
  echo "$line" > /tmp/dmload.blk
  head -c $((bs - \${#line} - 1)) /tmp/dmload.pat >> /tmp/dmload.blk
  dd if=/tmp/dmload.blk of=$dev bs=$bs seek=$idx count=1 conv=notrunc,fsync 2>/dev/null || { echo "dmload: write $n to block $idx failed"; exit 1; }
  sum=$(sha256sum /tmp/dmload.blk)
  echo "dmload: write $n block $idx offset $((idx * bs)) bytes $bs sha256 \${sum%% *}"
  n=$((n + 1))
  idx=$(((idx + stride) % blocks))
done
echo "dmload: done $n writes $((n * bs)) bytes in $(($(date +%s) - start)) s"
`;

export const DMSUM = `#!/bin/sh
# dmsum: the sha256 of the whole of /dev/sda, read from the device (its page cache dropped first).
sync
echo 3 > /proc/sys/vm/drop_caches
sum=$(sha256sum /dev/sda) || exit 1
echo "dmsum: \${sum%% *} /dev/sda $(blockdev --getsize64 /dev/sda) bytes"
`;
