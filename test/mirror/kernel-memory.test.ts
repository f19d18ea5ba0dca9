/**
 * The job and kernel memory: what the job asks of the kernel is sized when it
 * starts (views over wasm memory die when it grows), and given back when the
 * job is refused.
 */
import { describe, expect, it } from 'vitest';
import { MirrorJob } from '../../src/mirror/mirror-job.js';
import { Kernel } from '../../src/kernel/kernel.js';
import type { ImageFormat } from '../../src/format/image-format.js';
import { blankRaw, memoryRaw } from '../helpers/images.js';

const MiB = 1 << 20;

describe('kernel memory', () => {
  it('the picture and checkpoints never grow kernel memory while the job runs', async () => {
    const kernel = await Kernel.create();
    const size = 2 ** 40; // 1 TiB at 64 KiB: 16M chunks
    const fake = { size, format: 'raw', readOnly: false, info: async () => ({ format: 'raw', virtualSize: size, fileSize: size }) } as unknown as ImageFormat;
    const job = await MirrorJob.create({ source: fake, target: { ...fake } as ImageFormat, options: { sync: 'full' }, kernel });
    const before = kernel.memory.buffer.byteLength;
    for (let i = 0; i < 3; i++) {
      job.picture(300);
      job.serializeBitmap();
    }
    expect(kernel.memory.buffer.byteLength).toBe(before);
  });
});

// Found by the fuzzer (npm run fuzz): a job refused for a damaged resume bitmap kept its bitmaps and buffers.
describe('a job refused at creation', () => {
  it('leaves nothing in a shared kernel', async () => {
    const kernel = await Kernel.create();
    const attempt = async () => {
      await expect(
        MirrorJob.create({
          source: memoryRaw(4 * MiB).image,
          target: blankRaw(4 * MiB).image,
          options: { sync: 'full', 'buf-size': 64 * MiB },
          kernel,
          resume: { bitmap: new Uint8Array([1, 2, 3]) },
        }),
      ).rejects.toThrow(/serialized bitmap/);
    };
    await attempt();
    const after = kernel.memory.buffer.byteLength;
    for (let i = 0; i < 20; i++) await attempt();
    expect(kernel.memory.buffer.byteLength).toBe(after);
  });
});
