import { describe, expect, it } from 'vitest';
import { BlockError } from '../../src/block/block-device.js';
import { MemoryDevice } from '../../src/block/memory.js';
import { FaultDevice } from '../../src/block/fault.js';
import { HttpDevice } from '../../src/block/http.js';
import { NodeFileDevice } from '../../src/block/node-file.js';
import { OpfsDevice, type SyncAccessHandle } from '../../src/block/opfs.js';
import { startRangeServer } from '../helpers/http-server.js';
import { pattern } from '../contract/device-contract.js';

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(BlockError);
    return (err as BlockError).code;
  }
  return 'no error';
}

describe('FaultDevice', () => {
  it('fails matching requests with the rule errno; once rules fire once', async () => {
    const dev = new FaultDevice(new MemoryDevice(1 << 20));
    dev.faults.add({ op: 'read', errno: 'EIO', offset: 512 * 1024, length: 1, once: true });
    expect(await codeOf(dev.read(0, new Uint8Array(4096)))).toBe('no error');
    expect(await codeOf(dev.read(512 * 1024 - 10, new Uint8Array(11)))).toBe('EIO');
    expect(await codeOf(dev.read(512 * 1024 - 10, new Uint8Array(11)))).toBe('no error');
    expect(dev.faults.rules).toEqual([]);
  });

  it('"from offset to the end" catches every write past it, until removed', async () => {
    const dev = new FaultDevice(new MemoryDevice(4 << 20));
    dev.faults.add({ op: 'write', errno: 'ENOSPC', offset: 2 << 20, length: null, once: false });
    expect(await codeOf(dev.write((2 << 20) - 4096, new Uint8Array(4096)))).toBe('no error');
    expect(await codeOf(dev.write((2 << 20) - 1, new Uint8Array(2)))).toBe('ENOSPC');
    expect(await codeOf(dev.write(3 << 20, new Uint8Array(1)))).toBe('ENOSPC');
    expect(dev.faults.rules[0]!.hits).toBe(2);
    expect(dev.faults.remove(0)).toBe(true);
    expect(await codeOf(dev.write(3 << 20, new Uint8Array(1)))).toBe('no error');
  });

  it('injects flush failures and names the rule in the message', async () => {
    const dev = new FaultDevice(new MemoryDevice(10), [{ op: 'flush', errno: 'EIO', offset: 0, length: null, once: false }]);
    await expect(dev.flush()).rejects.toThrow(/injected fault \(flush from 0 to the end\)/);
  });

  it('validates rules', () => {
    const dev = new FaultDevice(new MemoryDevice(10));
    expect(() => dev.faults.add({ op: 'read', errno: 'EWHAT' as 'EIO', offset: 0, length: 1, once: false })).toThrow(/errno "EWHAT"/);
    expect(() => dev.faults.add({ op: 'read', errno: 'EIO', offset: -1, length: 1, once: false })).toThrow(/offset -1/);
    expect(() => dev.faults.add({ op: 'read', errno: 'EIO', offset: 0, length: 0, once: false })).toThrow(/length 0/);
  });
});

describe('HttpDevice failures', () => {
  const body = pattern(100_000);

  it('a server that ignores Range is ENOTSUP, at open', async () => {
    const server = await startRangeServer(body, { ignoreRange: true, noAcceptRanges: true });
    try {
      await expect(HttpDevice.open(server.url)).rejects.toMatchObject({ code: 'ENOTSUP', message: /ignores Range/ });
    } finally {
      await server.close();
    }
  });

  it('404 is ENOENT; 5xx and resets are EIO; a changed resource is ESTALE', async () => {
    let failNext: number | 'reset' | null = null;
    const server = await startRangeServer(body, { etag: '"a"', fail: () => failNext });
    try {
      expect(await codeOf(HttpDevice.open(server.url.replace('/image', '/missing')))).toBe('ENOENT');
      const dev = await HttpDevice.open(server.url);
      expect(dev.size).toBe(100_000);
      failNext = 503;
      expect(await codeOf(dev.read(0, new Uint8Array(10)))).toBe('EIO');
      failNext = 'reset';
      expect(await codeOf(dev.read(0, new Uint8Array(10)))).toBe('EIO');
      failNext = null;
      const buf = new Uint8Array(10);
      await dev.read(50, buf);
      expect([...buf]).toEqual([...body.subarray(50, 60)]);
      server.setContent(pattern(100_000, 7), '"b"');
      expect(await codeOf(dev.read(0, new Uint8Array(10)))).toBe('ESTALE');
    } finally {
      await server.close();
    }
  });

  it('a network failure at open is EIO', async () => {
    expect(await codeOf(HttpDevice.open('http://127.0.0.1:9/nothing'))).toBe('EIO');
  });
});

describe('NodeFileDevice', () => {
  it('a missing file is ENOENT; a directory is refused', async () => {
    expect(await codeOf(NodeFileDevice.open('/nonexistent/x.img'))).toBe('ENOENT');
    await expect(NodeFileDevice.open('/tmp')).rejects.toMatchObject({ code: expect.stringMatching(/EINVAL|EISDIR/) });
  });

  it('a read-only open refuses writes with EROFS', async () => {
    const dev = await NodeFileDevice.open('/etc/hostname', { readOnly: true });
    expect(await codeOf(dev.write(0, new Uint8Array(1)))).toBe('EROFS');
    await dev.close();
  });
});

/** A fake sync access handle, to check OPFS error mapping without a browser. */
class FakeHandle implements SyncAccessHandle {
  data = new Uint8Array(0);
  writeResult: ((len: number) => number) | null = null;
  throwOnWrite: Error | null = null;
  read(buffer: ArrayBufferView, options?: { at?: number }): number {
    const at = options?.at ?? 0;
    const view = new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    const n = Math.max(0, Math.min(view.length, this.data.length - at));
    view.set(this.data.subarray(at, at + n));
    return n;
  }
  write(buffer: ArrayBufferView, options?: { at?: number }): number {
    if (this.throwOnWrite) throw this.throwOnWrite;
    if (this.writeResult) return this.writeResult(buffer.byteLength);
    const at = options?.at ?? 0;
    const end = at + buffer.byteLength;
    if (end > this.data.length) {
      const grown = new Uint8Array(end);
      grown.set(this.data);
      this.data = grown;
    }
    this.data.set(new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength), at);
    return buffer.byteLength;
  }
  truncate(size: number): void {
    const next = new Uint8Array(size);
    next.set(this.data.subarray(0, size));
    this.data = next;
  }
  getSize(): number {
    return this.data.length;
  }
  flush(): void {}
  close(): void {}
}

describe('OpfsDevice error mapping', () => {
  it("Chromium's 0xFFFFFFF8 write result and short writes are ENOSPC", async () => {
    const h = new FakeHandle();
    const dev = new OpfsDevice(h, 'x.img');
    h.writeResult = () => 0xfffffff8;
    const err = (await dev.write(0, new Uint8Array(100)).catch((e) => e)) as BlockError;
    expect(err).toMatchObject({ code: 'ENOSPC', op: 'write', offset: 0, bytes: 100 });
    expect(err.message).toMatch(/no space/);
    h.writeResult = (len) => len - 1;
    expect(await codeOf(dev.write(0, new Uint8Array(100)))).toBe('ENOSPC');
  });

  it('after one failed flush, every flush fails (what was written may be lost), as QEMU file-posix', async () => {
    const h = new FakeHandle();
    const dev = new OpfsDevice(h, 'x.img');
    let failures = 1;
    h.flush = () => {
      if (failures-- > 0) throw new DOMException('io', 'InvalidStateError');
    };
    expect(await codeOf(dev.flush())).toBe('EBADF');
    const again = (await dev.flush().catch((e) => e)) as BlockError;
    expect(again.code).toBe('EIO');
    expect(again.message).toMatch(/an earlier flush failed/);
  });

  it('QuotaExceededError is ENOSPC, and keeps the original as cause', async () => {
    const h = new FakeHandle();
    const dev = new OpfsDevice(h, 'x.img');
    const quota = new DOMException('quota', 'QuotaExceededError');
    h.throwOnWrite = quota;
    const err = (await dev.write(0, new Uint8Array(1)).catch((e) => e)) as BlockError;
    expect(err.code).toBe('ENOSPC');
    expect(err.cause).toBe(quota);
  });

  it('a locked file is EBUSY and a missing one ENOENT at open', async () => {
    const dir = {
      async getFileHandle(name: string) {
        if (name === 'missing') throw new DOMException('nope', 'NotFoundError');
        return {
          async createSyncAccessHandle() {
            throw new DOMException('locked', 'NoModificationAllowedError');
          },
        };
      },
    } as unknown as FileSystemDirectoryHandle;
    expect(await codeOf(OpfsDevice.open(dir, 'locked'))).toBe('EBUSY');
    expect(await codeOf(OpfsDevice.open(dir, 'missing'))).toBe('ENOENT');
  });
});
