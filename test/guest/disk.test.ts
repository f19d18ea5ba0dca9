/**
 * GuestDisk, the object v86 takes as its disk, on a memory device: requests
 * in v86's order, set()'s buffer copied, sector 0 for the geometry, and a
 * failed request reported and left unanswered.
 */
import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/block/memory.js';
import { BlockError } from '../../src/block/block-device.js';
import { GuestDisk } from '../../src/guest/disk.js';

const get = (disk: GuestDisk, start: number, len: number) => new Promise<Uint8Array>((resolve) => disk.get(start, len, resolve));

describe('GuestDisk', () => {
  it('says its size and answers load() with onload', async () => {
    const disk = new GuestDisk(new MemoryDevice(4096));
    expect(disk.byteLength).toBe(4096);
    const loaded = new Promise((resolve) => (disk.onload = resolve));
    disk.load();
    await loaded;
    expect(() => new GuestDisk(new MemoryDevice(1000))).toThrow(/whole sectors/);
  });

  it("runs requests in v86's order: a read made after a write sees it, whatever the device's delays", async () => {
    const device = new MemoryDevice(8192);
    const write = device.write.bind(device);
    // The first write is slow: a disk that ran requests at once would answer the read first, with zeroes.
    let slow = true;
    device.write = async (offset, data) => {
      if (slow) {
        slow = false;
        await new Promise((r) => setTimeout(r, 30));
      }
      return write(offset, data);
    };
    const disk = new GuestDisk(device);
    const order: string[] = [];
    disk.set(512, new Uint8Array(512).fill(7), () => order.push('write'));
    const read = get(disk, 512, 512).then((data) => {
      order.push('read');
      return data;
    });
    expect([...(await read)].every((b) => b === 7)).toBe(true);
    expect(order).toEqual(['write', 'read']);
  });

  it('copies the data set() is given (v86 reuses its buffer)', async () => {
    const disk = new GuestDisk(new MemoryDevice(4096));
    const buffer = new Uint8Array(512).fill(1);
    const done = new Promise<void>((resolve) => disk.set(0, buffer, resolve));
    buffer.fill(2);
    await done;
    expect([...(await get(disk, 0, 512))].every((b) => b === 1)).toBe(true);
  });

  it('gives sector 0 synchronously once read (the IDE takes the geometry from it), and forgets it when it is written', async () => {
    const device = new MemoryDevice(4096);
    await device.write(510, Uint8Array.of(0x55, 0xaa));
    const disk = new GuestDisk(device);
    expect(disk.get_from_cache(0, 512)).toBeUndefined();
    await new Promise((resolve) => disk.get_and_cache(0, 512, resolve));
    expect([...disk.get_from_cache(0, 512)!.subarray(510)]).toEqual([0x55, 0xaa]);
    await new Promise<void>((resolve) => disk.set(0, new Uint8Array(512), resolve));
    expect(disk.get_from_cache(0, 512)).toBeUndefined();
  });

  it('reports a failed request and does not answer it; the requests after it still run', async () => {
    const device = new MemoryDevice(4096);
    device.read = async (offset, into) => {
      if (offset === 1024) throw new BlockError('EIO', 'read', offset, into.length, 'bad sector');
      into.fill(9);
    };
    const errors: string[] = [];
    const disk = new GuestDisk(device, { onError: (err, op, offset, bytes) => errors.push(`${op} ${offset} ${bytes} ${(err as BlockError).code}`) });
    let answered = false;
    disk.get(1024, 512, () => (answered = true));
    const after = await get(disk, 0, 512);
    await disk.drained();
    expect(answered).toBe(false);
    expect(errors).toEqual(['read 1024 512 EIO']);
    expect(after[0]).toBe(9);
    expect(disk.inFlight).toBe(0);
  });
});
