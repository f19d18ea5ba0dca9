/**
 * Node's zlib as the qcow2 codec for deflate clusters: native inflate and
 * deflate, several times faster than the portable ones the browser uses.
 * Anything but a clean, exactly cluster-sized inflate is handed back to
 * the portable decoder, which then fails or succeeds with its own words.
 */
import { constants, deflateRawSync, inflateRawSync } from 'node:zlib';
import { type NativeDeflate, useNativeDeflate } from '../format/qcow2/compress.js';

const nodeDeflate: NativeDeflate = {
  inflateRaw(data, out) {
    try {
      // info: the engine says how much input the stream used; what follows it (sector padding) is left alone.
      const { buffer, engine } = inflateRawSync(data, { info: true, maxOutputLength: out.length }) as unknown as { buffer: Buffer; engine: { bytesWritten: number } };
      if (buffer.length !== out.length) return null;
      out.set(buffer);
      return engine.bytesWritten;
    } catch {
      return null;
    }
  },
  deflateRaw(data, level) {
    return deflateRawSync(data, { level, strategy: constants.Z_DEFAULT_STRATEGY });
  },
};

/** From now on this process inflates and deflates clusters with Node's zlib. */
export function installNodeDeflate(): void {
  useNativeDeflate(nodeDeflate);
}
