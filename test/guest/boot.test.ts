/**
 * A Linux guest booted under Node by v86 over a raw image made by qemu-img
 * (random bytes in it), as a diskmirror device: what the guest writes with `dmload` reaches the
 * file at the offsets it says, and the sha256 the guest computes of its
 * whole disk is the file's. Prints the figures: time to the ready line and
 * to the shell prompt, the guest's write throughput.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NodeFileDevice } from '../../src/block/node-file.js';
import { GuestDisk } from '../../src/guest/disk.js';
import { GuestMachine, type GuestFiles } from '../../src/guest/machine.js';
import { GUEST_PROMPT, GUEST_READY_LINE } from '../../src/guest/words.js';
import { GUEST_DIR, requireGuestFiles, requireProgram } from '../helpers/require-program.js';

const DISK_BYTES = 64 * 1024 * 1024;
const MINUTE = 60_000;

const fileBuffer = (path: string): ArrayBuffer => {
  const b = readFileSync(path);
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.length) as ArrayBuffer;
};
const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

describe('a Linux guest under v86 over a diskmirror device', () => {
  let dir: string;
  let device: NodeFileDevice;
  let disk: GuestDisk;
  let machine: GuestMachine | undefined;
  const writes: { offset: number; bytes: number }[] = [];
  const errors: string[] = [];
  let writeDelayMs = 0;

  beforeAll(() => {
    requireGuestFiles();
    requireProgram('qemu-img', 'it makes the raw image the guest boots with');
    dir = mkdtempSync(join(tmpdir(), 'diskmirror-guest-'));
  });

  afterAll(async () => {
    await machine?.stop();
    await device?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('boots, writes with dmload through set(), and its dmsum is the sha256 of the file', { timeout: 15 * MINUTE }, async () => {
    const image = join(dir, 'disk.raw');
    execFileSync('qemu-img', ['create', '-q', '-f', 'raw', image, String(DISK_BYTES)]);
    // Random bytes past sector 0 (left empty: no partition table to find), so dmsum checks what the guest reads too.
    const fd = openSync(image, 'r+');
    writeSync(fd, randomBytes(DISK_BYTES - 512), 0, DISK_BYTES - 512, 512);
    closeSync(fd);
    device = await NodeFileDevice.open(image);
    // Each write can be made slow (the last test).
    const write = device.write.bind(device);
    device.write = async (offset, data) => {
      if (writeDelayMs > 0) await new Promise((r) => setTimeout(r, writeDelayMs));
      return write(offset, data);
    };
    disk = new GuestDisk(device, {
      onWrite: (offset, bytes) => writes.push({ offset, bytes }),
      onError: (err, op, offset, bytes) => errors.push(`${op} of ${bytes} bytes at ${offset}: ${String(err)}`),
    });
    const files: GuestFiles = {
      bios: fileBuffer(join(GUEST_DIR, 'bios.bin')),
      vgaBios: fileBuffer(join(GUEST_DIR, 'vgabios.bin')),
      kernel: fileBuffer(join(GUEST_DIR, 'vmlinuz')),
      initrd: fileBuffer(join(GUEST_DIR, 'initramfs.cpio.gz')),
    };
    const wasmPath = createRequire(import.meta.url).resolve('v86/build/v86.wasm');
    const wasm = await WebAssembly.compile(readFileSync(wasmPath));

    const started = performance.now();
    const cpuStarted = process.cpuUsage();
    const cpuSeconds = () => {
      const used = process.cpuUsage(cpuStarted);
      return (used.user + used.system) / 1e6;
    };
    machine = new GuestMachine({ files, disk, wasm });
    const ready = await machine.waitFor(new RegExp(`${GUEST_READY_LINE} /dev/sda (\\d+) bytes`), 0, 8 * MINUTE);
    const readySeconds = (performance.now() - started) / 1000;
    expect(ready.text).toContain(`${GUEST_READY_LINE} /dev/sda ${DISK_BYTES} bytes`);
    await machine.waitFor(GUEST_PROMPT, ready.end, MINUTE);
    const promptSeconds = (performance.now() - started) / 1000;
    const promptCpuSeconds = cpuSeconds();

    const loadStarted = performance.now();
    const load = await machine.run('dmload 5', 3 * MINUTE);
    const loadSeconds = (performance.now() - loadStarted) / 1000;
    const written = [...load.matchAll(/^dmload: write (\d+) block (\d+) offset (\d+) bytes (\d+) sha256 ([0-9a-f]{64})$/gm)].map((m) => ({
      offset: Number(m[3]),
      bytes: Number(m[4]),
      sha256: m[5] as string,
    }));
    const done = /^dmload: done (\d+) writes (\d+) bytes in (\d+) s$/m.exec(load);
    expect(done, load).not.toBeNull();
    expect(written.length).toBe(Number(done?.[1]));
    expect(written.length).toBeGreaterThan(0);
    await disk.drained();

    // Each block the guest says it wrote is in the file at its offset (the stride writes each block once).
    const image0 = readFileSync(image);
    for (const w of written) expect(sha256(image0.subarray(w.offset, w.offset + w.bytes)), `block at ${w.offset}`).toBe(w.sha256);
    // And it came through set(): the writes that reached the device cover every block dmload wrote.
    for (const w of written) expect(coveredBy(writes, w.offset, w.bytes), `block at ${w.offset}`).toBe(true);

    const sumStarted = performance.now();
    const sum = await machine.run('dmsum', 8 * MINUTE);
    const sumSeconds = (performance.now() - sumStarted) / 1000;
    const printed = /^dmsum: ([0-9a-f]{64}) \/dev\/sda (\d+) bytes$/m.exec(sum);
    expect(printed, sum).not.toBeNull();
    await disk.drained();
    const after = readFileSync(image);
    expect(after.length).toBe(DISK_BYTES);
    expect(printed?.[1]).toBe(sha256(after));
    expect(errors).toEqual([]);

    const guestBytes = Number(done?.[2]);
    console.log(
      [
        `guest under Node: ready line after ${readySeconds.toFixed(1)} s, shell prompt after ${promptSeconds.toFixed(1)} s ` +
          `(${promptCpuSeconds.toFixed(1)} s of this process's CPU: the figure the machine's load changes least)`,
        `dmload 5: ${written.length} writes of 64 KiB (${guestBytes} bytes) in ${loadSeconds.toFixed(1)} s: ${(guestBytes / 1024 / loadSeconds).toFixed(0)} KiB/s; ` +
          `${writes.length} set() calls, ${writes.reduce((a, w) => a + w.bytes, 0)} bytes`,
        `dmsum of ${DISK_BYTES >> 20} MiB: ${sumSeconds.toFixed(1)} s (${(DISK_BYTES / 1024 / 1024 / sumSeconds).toFixed(2)} MiB/s read and hashed in the guest)`,
      ].join('\n'),
    );
  });

  it("waits for the device: with each write made 1.5 s slow, dd conv=fsync returns only once its write reached it (v86's DMA write completes in set()'s callback)", { timeout: 5 * MINUTE }, async () => {
    expect(machine, 'the guest booted in the test before').toBeDefined();
    const guest = machine as GuestMachine;
    writeDelayMs = 1500;
    const before = writes.length;
    const started = performance.now();
    // 4 separate 4 KiB writes at scattered places (seek in 4 KiB blocks), each its own request.
    await guest.run('for i in 0 1 2 3; do dd if=/dev/urandom of=/dev/sda bs=4096 count=1 seek=$((i * 97 + 5)) conv=notrunc,fsync 2>/dev/null; done', 3 * MINUTE);
    const seconds = (performance.now() - started) / 1000;
    const made = writes.length - before;
    // Nothing left in flight when the shell is back, and the guest took at least the device's time.
    expect(disk.inFlight).toBe(0);
    expect(made).toBeGreaterThanOrEqual(4);
    expect(seconds).toBeGreaterThanOrEqual((made * writeDelayMs) / 1000);
    writeDelayMs = 0;
    console.log(`with 1.5 s writes: ${made} set() calls, the guest's 4 fsync'd writes took ${seconds.toFixed(1)} s`);
  });
});

/** Whether the device writes in `pieces` together cover [offset, offset + bytes). */
function coveredBy(pieces: { offset: number; bytes: number }[], offset: number, bytes: number): boolean {
  const sorted = pieces.filter((p) => p.offset < offset + bytes && p.offset + p.bytes > offset).sort((a, b) => a.offset - b.offset);
  let reached = offset;
  for (const p of sorted) {
    if (p.offset > reached) return false;
    reached = Math.max(reached, p.offset + p.bytes);
  }
  return reached >= offset + bytes;
}
