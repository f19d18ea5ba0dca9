/**
 * Compressed clusters: raw deflate (compression type zlib) and zstd.
 *
 * The stored size is rounded up to 512-byte sectors, so bytes follow the
 * stream: both decoders stop once one cluster has been produced. zstd is
 * decoded as a stream for that reason (a one-shot decode can fail on the
 * trailing bytes). QEMU writes deflate with a 4 KiB window and inflates the
 * whole cluster in one call, which accepts any distance within the cluster,
 * so fflate's output (32 KiB window) reads back in QEMU.
 */
import { deflateSync, inflateSync } from 'fflate';
import { Decompress as ZstdDecompress } from 'fzstd';
import { FormatError } from '../image-format.js';
import type { CompressionType } from './constants.js';

/** Decompresses one cluster into `out` (exactly one cluster long); throws a FormatError when the data is bad. */
export function decompressCluster(type: CompressionType, data: Uint8Array, out: Uint8Array, where: string): void {
  try {
    if (type === 'zlib') inflateCluster(data, out);
    else zstdCluster(data, out);
  } catch (err) {
    if (err instanceof FormatError) throw err;
    const message = err instanceof Error ? err.message : String(err);
    throw new FormatError(`Compressed cluster ${where} could not be decompressed (${type}): ${message}`, 'compressed_cluster', { cause: err });
  }
}

function inflateCluster(data: Uint8Array, out: Uint8Array): void {
  const result = inflateSync(data, { out });
  if (result.length < out.length) throw new Error(`the stream ends after ${result.length} of ${out.length} bytes`);
  if (result.buffer !== out.buffer || result.byteOffset !== out.byteOffset) out.set(result.subarray(0, out.length));
}

function zstdCluster(data: Uint8Array, out: Uint8Array): void {
  let produced = 0;
  const done = new Error('cluster complete');
  const stream = new ZstdDecompress((chunk) => {
    const take = Math.min(chunk.length, out.length - produced);
    out.set(chunk.subarray(0, take), produced);
    produced += take;
    if (produced >= out.length) throw done; // stop: the rest is padding
  });
  try {
    // Feed in small pieces so decoding stops soon after one cluster is out.
    const piece = 4096;
    for (let at = 0; at < data.length && produced < out.length; at += piece) {
      stream.push(data.subarray(at, Math.min(data.length, at + piece)), at + piece >= data.length);
    }
  } catch (err) {
    if (err !== done && produced < out.length) throw err;
  }
  if (produced < out.length) throw new Error(`the stream ends after ${produced} of ${out.length} bytes`);
}

/** Raw deflate of one cluster (level 6, as QEMU's default); null when it would not save space. */
export function compressCluster(type: CompressionType, data: Uint8Array): Uint8Array | null {
  if (type !== 'zlib') return null;
  const out = deflateSync(data, { level: 6 });
  // QEMU stores a cluster compressed only if it fits in cluster_size - 1 bytes.
  return out.length < data.length ? out : null;
}
