/**
 * What the fuzzer feeds: every parser of bytes that come from outside.
 * Each target takes one input and either returns (accepted, or refused with
 * one of the errors that name what is wrong) or throws something else: a
 * crash. The fuzzer's worker decides which errors are expected.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { workerData } from 'node:worker_threads';
import { MemoryDevice } from '../src/block/memory.js';
import { readSidecar } from '../src/cli/sidecar.js';
import { readJsonValues } from '../src/cli/qmp-json.js';
import { checkArguments, checkQmpRequest, isCommandName } from '../src/mirror/control.js';
import { openImage } from '../src/format/open.js';
import type { ImageFormat } from '../src/format/image-format.js';
import { checkImage } from '../src/format/qcow2/check.js';
import { Qcow2Image } from '../src/format/qcow2/image.js';
import { Kernel } from '../src/kernel/kernel.js';
import { MirrorJob } from '../src/mirror/mirror-job.js';
import { givenOptions } from '../src/mirror/options.js';
import { RawImage } from '../src/format/raw.js';
import { checkVdi } from '../src/format/vdi/check.js';
import { VdiImage } from '../src/format/vdi/image.js';
import { checkVhdx } from '../src/format/vhdx/check.js';
import { VhdxImage } from '../src/format/vhdx/image.js';
import { unpackVhdx } from './vhdx-pack.js';
import { checkVmdk } from '../src/format/vmdk/check.js';
import { VmdkImage } from '../src/format/vmdk/image.js';
import type { ResolvedOptions } from '../src/mirror/options.js';

export type Target = (input: Uint8Array) => Promise<void>;

/** Where a qcow2 input's header puts the backing file's name: any name opens the input's second half as raw or qcow2. */
function splitBacking(input: Uint8Array): { top: Uint8Array; backing: Uint8Array } {
  const cut = input.length >= 8 ? (input[input.length - 1]! << 8) | input[input.length - 2]! : 0;
  const at = Math.min(input.length, cut * 512);
  return at > 0 && at < input.length - 2 ? { top: input.subarray(0, at), backing: input.subarray(at, input.length - 2) } : { top: input, backing: new Uint8Array(0) };
}

/** Asks an image's info, reads the whole virtual disk when it is small (otherwise its first and last 4 MiB), and maps it. */
async function readAndMap(image: ImageFormat): Promise<void> {
  await image.info();
  const size = image.size;
  const window = 4 << 20;
  const ranges = size <= 2 * window ? [[0, size]] : [[0, window], [size - window, window]];
  for (const [at, bytes] of ranges) {
    const buf = new Uint8Array(Math.min(bytes!, 1 << 20));
    for (let off = at!; off < at! + bytes!; off += buf.length) await image.read(off, buf.subarray(0, Math.min(buf.length, at! + bytes! - off)));
  }
  for (let off = 0, n = 0; off < size && n < 2000; n++) {
    const s = await image.blockStatus(off, size - off);
    if (s.bytes <= 0) throw new Error(`block status made no progress at ${off}`);
    off += s.bytes;
  }
}

/** Opens a qcow2 image from the bytes (a backing file from the rest), reads it whole, maps it, checks it. */
const qcow2: Target = async (input) => {
  const { top, backing } = splitBacking(input);
  const image = await openImage(new MemoryDevice(top, true), {
    format: 'qcow2',
    readOnly: true,
    name: 'fuzz.qcow2',
    resolve: async (name) => ({ device: new MemoryDevice(backing, true), name: `backing-of-${name.length}` }),
  });
  try {
    await readAndMap(image);
    if (image instanceof Qcow2Image) await checkImage(image);
  } finally {
    await image.close();
  }
};

/**
 * A vpc, vdi, vhdx or vmdk image: opened, read whole (or its ends), mapped,
 * checked (vdi, vhdx, vmdk), then written once at each end of a copy. A vhdx
 * input is packed (vhdx-pack.ts); opened read-write, a log in it is replayed.
 */
function blockImage(format: 'vpc' | 'vdi' | 'vhdx' | 'vmdk'): Target {
  return async (packed) => {
    const input = format === 'vhdx' ? unpackVhdx(packed) : packed;
    const image = await openImage(new MemoryDevice(input, true), { format, readOnly: true });
    try {
      await readAndMap(image);
      if (image instanceof VdiImage) checkVdi(image);
      if (image instanceof VhdxImage) checkVhdx(image);
      if (image instanceof VmdkImage) await checkVmdk(image);
    } finally {
      await image.close();
    }
    // Writes allocate on whatever layout the input has: they must stay inside the file's own rules.
    const writable = await openImage(new MemoryDevice(input), { format, readOnly: false });
    try {
      const data = new Uint8Array(4096).fill(0x5a);
      if (writable.size >= data.length) {
        await writable.write(0, data);
        await writable.write(writable.size - data.length, data);
        const back = new Uint8Array(data.length);
        await writable.read(0, back);
        if (!back.every((b) => b === 0x5a)) throw new Error('a write did not read back');
      }
    } finally {
      await writable.close();
    }
  };
}

let kernel: Kernel | null = null;
let scratch: string | null = null;

/** A checkpoint file as `diskmirror mirror --resume` reads it, then a job resumed from it over small images. */
const checkpoint: Target = async (input) => {
  // The driver's scratch directory (removed by it at the end).
  scratch ??= (workerData as { scratch?: string } | null)?.scratch ?? mkdtempSync(join(tmpdir(), 'diskmirror-fuzz-'));
  const path = join(scratch, 'dst.raw.dmcheckpoint');
  writeFileSync(path, input);
  const read = readSidecar(path);
  if (!read) return;
  kernel ??= await Kernel.create();
  const options = givenOptions(read.options as ResolvedOptions, {});
  const size = 1 << 20;
  const job = await MirrorJob.create({
    source: new RawImage(new MemoryDevice(size)),
    target: new RawImage(new MemoryDevice(size)),
    options: { ...options, speed: 0 },
    kernel,
    resume: { bitmap: read.bitmapBytes },
  });
  job.cancel();
  await job.result;
};

/** QMP input as the monitor reads it: JSON values, then each request and its arguments checked. */
const qmp: Target = async (input) => {
  const text = new TextDecoder().decode(input);
  for (const item of readJsonValues(text)) {
    if ('error' in item) continue;
    let request;
    try {
      request = checkQmpRequest(item.value);
    } catch (err) {
      if ((err as Error).name === 'CommandError') continue;
      throw err;
    }
    if (isCommandName(request.execute)) {
      try {
        checkArguments(request.execute, request.arguments ?? {});
      } catch (err) {
        if ((err as Error).name !== 'CommandError') throw err;
      }
    }
  }
};

export const TARGETS: Record<string, Target> = { qcow2, vpc: blockImage('vpc'), vdi: blockImage('vdi'), vhdx: blockImage('vhdx'), vmdk: blockImage('vmdk'), checkpoint, qmp };
