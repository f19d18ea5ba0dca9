/**
 * VMDK on memory devices, without qemu-img: a new image written and read
 * back in both subformats, probing (sparse magic, descriptor text after
 * comments and lines of spaces, an OVA) as qemu-img's vmdk_probe, the page's word for a .vmdk
 * name, and an imported VMDK's facts (format and virtual size from its
 * content, not its name).
 */
import { describe, expect, it } from 'vitest';
import { FormatError } from '../../src/format/image-format.js';
import { mapImage } from '../../src/format/map.js';
import { MemoryDevice } from '../../src/block/memory.js';
import { createImage, openImage } from '../../src/format/open.js';
import { probeFormat } from '../../src/format/probe.js';
import { RawImage } from '../../src/format/raw.js';
import { formatFromName } from '../../src/ui/format-names.js';
import { contentFacts } from '../../src/worker/job-source.js';
import { mixedData } from './qcow2-images.js';

const text = (s: string) => new MemoryDevice(new TextEncoder().encode(s));

/** A one-member-at-a-time ustar writer: enough for an OVA. */
function tar(members: [string, Uint8Array][]): Uint8Array {
  const blocks: Uint8Array[] = [];
  for (const [name, data] of members) {
    const head = new Uint8Array(512);
    const put = (at: number, s: string) => head.set(new TextEncoder().encode(s), at);
    put(0, name);
    put(100, '0000644\0');
    put(124, `${data.length.toString(8).padStart(11, '0')}\0`);
    put(156, '0');
    put(257, 'ustar\0');
    put(263, '00');
    head.fill(0x20, 148, 156);
    const sum = head.reduce((a, b) => a + b, 0);
    put(148, `${sum.toString(8).padStart(6, '0')}\0 `);
    blocks.push(head, data, new Uint8Array((512 - (data.length % 512)) % 512));
  }
  blocks.push(new Uint8Array(1024));
  const out = new Uint8Array(blocks.reduce((a, b) => a + b.length, 0));
  let at = 0;
  for (const b of blocks) {
    out.set(b, at);
    at += b.length;
  }
  return out;
}

async function newVmdk(subformat: 'monolithicSparse' | 'streamOptimized', bytes: number): Promise<{ file: MemoryDevice; guest: Uint8Array }> {
  const file = new MemoryDevice(0);
  const image = await createImage(file, { format: 'vmdk', size: bytes, subformat });
  const guest = new Uint8Array(image.size);
  for (const grain of [0, 3, 7].filter((g) => (g + 1) * 65536 <= bytes)) {
    const data = mixedData(65536, grain);
    await image.write(grain * 65536, data);
    guest.set(data, grain * 65536);
  }
  // Flushed, not closed: the memory stays readable.
  await image.flush();
  return { file, guest };
}

describe('vmdk on memory', () => {
  for (const subformat of ['monolithicSparse', 'streamOptimized'] as const) {
    it(`${subformat}: what is written reads back after a reopen; holes read as zeroes`, async () => {
      const { file, guest } = await newVmdk(subformat, 10 * 65536 + 512);
      const image = await openImage(file, { readOnly: true });
      expect(image.format).toBe('vmdk');
      const back = new Uint8Array(image.size);
      await image.read(0, back);
      expect(Buffer.compare(back, guest)).toBe(0);
      expect(await image.blockStatus(65536, 2 * 65536)).toMatchObject({ kind: 'unallocated', bytes: 2 * 65536 });
      expect((await image.info()).details).toMatchObject({ createType: subformat, parentCid: 0xffffffff });
      await image.close();
    });
  }

  it('probing: "KDMV", a descriptor after comments and lines of spaces, an OVA; not other text', async () => {
    const { file } = await newVmdk('monolithicSparse', 4 * 65536);
    expect(await probeFormat(file)).toBe('vmdk');
    expect(await probeFormat(text('# Disk DescriptorFile\n  \r\nversion=1\r\nCID=1\n'))).toBe('vmdk');
    // An empty line is neither a comment nor spaces: QEMU's probe stops there.
    expect(await probeFormat(text('# Disk DescriptorFile\n\nversion=1\n'))).toBe('raw');
    expect(await probeFormat(text('# Disk DescriptorFile\nversion=4\n'))).toBe('raw');
    expect(await probeFormat(text('# a\nx version=1\n'))).toBe('raw');
    const ova = tar([['vm.ovf', new TextEncoder().encode('<Envelope/>')], ['disk.vmdk', file.bytes()]]);
    expect(await probeFormat(new MemoryDevice(ova))).toBe('vmdk');
    // A tar that is no OVA (its first member no .ovf) is a raw disk, as qemu-img says.
    expect(await probeFormat(new MemoryDevice(tar([['notes.txt', new Uint8Array(10)]])))).toBe('raw');
  });

  it('an OVA opens read-only as its disk', async () => {
    const { file, guest } = await newVmdk('streamOptimized', 8 * 65536);
    const ova = tar([['vm.ovf', new TextEncoder().encode('<Envelope/>')], ['disk1.vmdk', file.bytes()], ['vm.mf', new Uint8Array(3)]]);
    const image = await openImage(new MemoryDevice(ova), {});
    expect(image.readOnly).toBe(true);
    const back = new Uint8Array(image.size);
    await image.read(0, back);
    expect(Buffer.compare(back, guest)).toBe(0);
    await image.close();
  });

  it('a grain table entry past the end of the file is not written in place (the file would grow to it): refused naming the grain table', async () => {
    const { file } = await newVmdk('monolithicSparse', 4 * 65536);
    const bytes = file.bytes().slice();
    const view = new DataView(bytes.buffer);
    // Both grain tables (the header's GD and the redundant one) say grain 0 is at sector 0x11111111 (286 GiB in).
    for (const gdField of [56, 48]) {
      const gt = view.getUint32(view.getUint32(gdField, true) * 512, true);
      view.setUint32(gt * 512, 0x11111111, true);
    }
    const device = new MemoryDevice(bytes);
    const image = await openImage(device, { format: 'vmdk', readOnly: false });
    await expect(image.write(0, new Uint8Array(512))).rejects.toBeInstanceOf(FormatError);
    await expect(image.writeZeroes(0, 512, { unmap: false })).rejects.toMatchObject({ field: 'grain table' });
    expect(device.size).toBe(bytes.length);
    // Read, it is zeroes, as QEMU reads past the end of a file.
    const back = new Uint8Array(512).fill(1);
    await image.read(0, back);
    expect(back.every((b) => b === 0)).toBe(true);
  });

  it('block status over a disk of 1 TiB with no grain tables steps over each missing table at once (a map takes well under a second, not one lookup a grain)', async () => {
    const { file } = await newVmdk('monolithicSparse', 4 * 65536);
    const bytes = new Uint8Array(1 << 20);
    bytes.set(file.bytes());
    const view = new DataView(bytes.buffer);
    view.setUint32(12, 2 ** 31, true); // capacity: 1 TiB in sectors
    view.setUint32(8, view.getUint32(8, true) & ~2, true); // no redundant GD
    view.setUint32(56, 1024, true); // the GD: 32768 empty entries at 512 KiB
    const image = await openImage(new MemoryDevice(bytes), { format: 'vmdk', readOnly: true });
    expect(image.size).toBe(2 ** 40);
    const started = Date.now();
    const extents: { length: number; present: boolean }[] = [];
    await mapImage(image, (e) => extents.push(e));
    expect(Date.now() - started).toBeLessThan(1500);
    expect(extents).toEqual([{ start: 0, length: 2 ** 40, depth: 0, present: false, zero: true, data: false }]);
  });

  it('the page: a .vmdk name asks for vmdk; an imported VMDK is listed by its content', async () => {
    expect(formatFromName('disk.VMDK')).toBe('vmdk');
    const { file } = await newVmdk('monolithicSparse', 5 * 65536);
    expect(await contentFacts(new RawImage(file))).toEqual({ format: 'vmdk', virtualSize: 5 * 65536 });
  });
});
