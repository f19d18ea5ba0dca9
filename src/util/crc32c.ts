/**
 * CRC-32C (Castagnoli, reflected polynomial 0x82f63b78), table-driven: the
 * checksum VHDX puts on its headers, region tables and log entries.
 * `crc32c(bytes)` is the usual value (initial 0xffffffff, final xor);
 * `crc32cUpdate` runs on from a raw register, for data in pieces.
 */
const TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** Runs the register `crc` (not inverted) over `bytes`. */
export function crc32cUpdate(crc: number, bytes: Uint8Array): number {
  let c = crc >>> 0;
  for (let i = 0; i < bytes.length; i++) c = TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return c >>> 0;
}

/** CRC-32C of `bytes`. */
export function crc32c(bytes: Uint8Array): number {
  return (crc32cUpdate(0xffffffff, bytes) ^ 0xffffffff) >>> 0;
}
