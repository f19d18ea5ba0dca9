/**
 * The BlockDevice contract, written once and run against every device:
 * memory, Node file, fault, Blob and HTTP under vitest, and OPFS inside a
 * worker in real Chromium. It depends on nothing but the device interface,
 * so the same file runs in both places.
 */
import { type BlockDevice, BlockError } from '../../src/block/block-device.js';

export interface DeviceUnderTest {
  device: BlockDevice;
  cleanup?: () => Promise<void>;
}

export interface DeviceFactory {
  name: string;
  writable: boolean;
  /** Its size is the server's to set (an NBD export): a write past the end is refused, not grown into. */
  fixedSize?: boolean;
  /** A device holding exactly `initial`. */
  make(initial: Uint8Array): Promise<DeviceUnderTest>;
}

export interface ContractCase {
  name: string;
  run(): Promise<void>;
}

class ContractFailure extends Error {
  override name = 'ContractFailure';
}

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new ContractFailure(message);
}

function equalBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  assert(actual.length === expected.length, `${what}: length ${actual.length}, expected ${expected.length}`);
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] !== expected[i]) throw new ContractFailure(`${what}: byte ${i} is ${actual[i]}, expected ${expected[i]}`);
  }
}

async function rejectsWith(promise: Promise<unknown>, code: string, what: string): Promise<BlockError> {
  try {
    await promise;
  } catch (err) {
    assert(err instanceof BlockError, `${what}: threw ${String(err)}, not a BlockError`);
    assert(err.code === code, `${what}: code ${err.code}, expected ${code} (${err.message})`);
    return err;
  }
  throw new ContractFailure(`${what}: did not fail`);
}

/** Deterministic, non-repeating-looking content. */
export function pattern(bytes: number, seed = 1): Uint8Array {
  const out = new Uint8Array(bytes);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < bytes; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

const SIZE = 256 * 1024 + 123; // not a multiple of anything

export function deviceContract(factory: DeviceFactory): ContractCase[] {
  const cases: ContractCase[] = [];
  const add = (name: string, body: (dut: BlockDevice, initial: Uint8Array) => Promise<void>) => {
    cases.push({
      name: `${factory.name}: ${name}`,
      async run() {
        const initial = pattern(SIZE, name.length);
        const dut = await factory.make(initial);
        try {
          await body(dut.device, initial);
        } finally {
          await dut.device.close().catch(() => {});
          await dut.cleanup?.();
        }
      },
    });
  };

  add('reports its size', async (dev) => {
    assert(dev.size === SIZE, `size ${dev.size}, expected ${SIZE}`);
  });

  add('reads back every byte, whole and in pieces', async (dev, initial) => {
    const all = new Uint8Array(SIZE);
    await dev.read(0, all);
    equalBytes(all, initial, 'whole read');
    for (const [offset, bytes] of [[0, 1], [1, 511], [4095, 4098], [SIZE - 1, 1], [SIZE - 700, 700], [12345, 0]] as const) {
      const part = new Uint8Array(bytes);
      await dev.read(offset, part);
      equalBytes(part, initial.subarray(offset, offset + bytes), `read ${offset}+${bytes}`);
    }
  });

  add('reads into a view inside a larger buffer', async (dev, initial) => {
    const big = new Uint8Array(10_000).fill(0xee);
    await dev.read(100, big.subarray(50, 5050));
    equalBytes(big.subarray(50, 5050), initial.subarray(100, 5100), 'sub-view read');
    assert(big[49] === 0xee && big[5050] === 0xee, 'read wrote outside its view');
  });

  add('serves parallel reads', async (dev, initial) => {
    const reads = Array.from({ length: 16 }, (_, i) => {
      const offset = (i * 16411) % (SIZE - 8192);
      const buf = new Uint8Array(8192);
      return dev.read(offset, buf).then(() => equalBytes(buf, initial.subarray(offset, offset + 8192), `parallel read ${i}`));
    });
    await Promise.all(reads);
  });

  add('refuses reads past the end and bad offsets with EINVAL', async (dev) => {
    const err = await rejectsWith(dev.read(SIZE - 10, new Uint8Array(11)), 'EINVAL', 'read past end');
    assert(err.op === 'read' && err.offset === SIZE - 10 && err.bytes === 11, `error fields: ${err.op} ${err.offset} ${err.bytes}`);
    await rejectsWith(dev.read(-1, new Uint8Array(1)), 'EINVAL', 'negative offset');
    await rejectsWith(dev.read(0.5, new Uint8Array(1)), 'EINVAL', 'fractional offset');
  });

  add('fails with EBADF once closed', async (dev) => {
    await dev.close();
    await rejectsWith(dev.read(0, new Uint8Array(1)), 'EBADF', 'read after close');
  });

  if (factory.writable) {
    add('writes, overwrites and reads back', async (dev, initial) => {
      const data = pattern(70_000, 99);
      await dev.write(5000, data);
      await dev.write(5001, new Uint8Array([1, 2, 3]));
      data.set([1, 2, 3], 1);
      const expected = initial.slice();
      expected.set(data, 5000);
      const all = new Uint8Array(SIZE);
      await dev.read(0, all);
      equalBytes(all, expected, 'after writes');
      await dev.flush();
    });

    if (factory.fixedSize) {
      add('refuses writes past its end with EINVAL (its size is fixed)', async (dev) => {
        await rejectsWith(dev.write(SIZE - 1, new Uint8Array([7, 8])), 'EINVAL', 'write past the end');
        assert(dev.size === SIZE, `size after a refused write ${dev.size}`);
      });
    } else add('grows when written past its end', async (dev, initial) => {
      await dev.write(SIZE + 1000, new Uint8Array([7, 8]));
      assert(dev.size === SIZE + 1002, `size after growing write ${dev.size}, expected ${SIZE + 1002}`);
      const tail = new Uint8Array(1002 + 10);
      await dev.read(SIZE - 10, tail);
      equalBytes(tail.subarray(0, 10), initial.subarray(SIZE - 10), 'old tail');
      equalBytes(tail.subarray(10, 1010), new Uint8Array(1000), 'gap reads as zeroes');
      equalBytes(tail.subarray(1010), new Uint8Array([7, 8]), 'new bytes');
    });

    add('zeroes exactly the range asked, partial blocks included (devices that write zeroes)', async (dev, initial) => {
      if (!dev.writeZeroes) return;
      const expected = initial.slice();
      for (const [offset, bytes] of [
        [10, 5],
        [700, 1000],
        [4096, 8192],
        [20_000, 100_001],
      ] as const) {
        await dev.writeZeroes(offset, bytes, { unmap: false });
        expected.fill(0, offset, offset + bytes);
      }
      await dev.writeZeroes(150_000, 30_000, { unmap: true });
      expected.fill(0, 150_000, 180_000);
      const all = new Uint8Array(SIZE);
      await dev.read(0, all);
      equalBytes(all, expected, 'after zeroes');
    });

    add('serves parallel writes to distinct ranges', async (dev) => {
      const chunks = Array.from({ length: 16 }, (_, i) => pattern(4096, i + 1));
      await Promise.all(chunks.map((c, i) => dev.write(i * 4096, c)));
      for (let i = 0; i < 16; i++) {
        const back = new Uint8Array(4096);
        await dev.read(i * 4096, back);
        equalBytes(back, chunks[i]!, `parallel write ${i}`);
      }
    });

    if (factory.name !== 'fault') {
      add('resizes when it can', async (dev) => {
        if (!dev.resize) return;
        await dev.resize(1000);
        assert(dev.size === 1000, `size after shrink ${dev.size}`);
        await dev.resize(5000);
        const tail = new Uint8Array(4000);
        await dev.read(1000, tail);
        equalBytes(tail, new Uint8Array(4000), 'grown tail reads as zeroes');
      });
    }

    add('fails with EBADF on write once closed', async (dev) => {
      await dev.close();
      await rejectsWith(dev.write(0, new Uint8Array(1)), 'EBADF', 'write after close');
    });
  } else {
    add('refuses writes with EROFS', async (dev) => {
      const err = await rejectsWith(dev.write(0, new Uint8Array(4)), 'EROFS', 'write to read-only');
      assert(err.op === 'write', `op ${err.op}`);
    });
  }
  return cases;
}
