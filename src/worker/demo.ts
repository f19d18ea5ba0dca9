/**
 * The app's demo image: patterned data with holes, so a newcomer can run a
 * mirror (and watch zero chunks skipped) without bringing an image. App
 * content, made by the worker's image store; the formats know nothing of it.
 */
import type { ImageFormat } from '../format/image-format.js';

export const DEMO_IMAGE_BYTES = 8 << 20;

/**
 * Fills `image` with the demo pattern: each 64 KiB block is either a hole
 * (zeroes, one block in four), or bytes that spell out where they are.
 */
export async function writeDemoImage(image: ImageFormat): Promise<void> {
  const block = 64 << 10;
  const piece = new Uint8Array(1 << 20);
  for (let offset = 0; offset < image.size; offset += piece.length) {
    const bytes = Math.min(piece.length, image.size - offset);
    piece.fill(0);
    for (let b = 0; b < bytes; b += block) {
      const index = (offset + b) / block;
      if (index % 4 === 3) continue; // a hole
      const text = new TextEncoder().encode(`diskmirror demo block ${index} at byte ${offset + b}\n`);
      for (let i = 0; i < Math.min(block, bytes - b); i++) piece[b + i] = text[i % text.length]! ^ (index & 0x7f);
    }
    await image.write(offset, piece.subarray(0, bytes));
  }
  await image.flush();
}
