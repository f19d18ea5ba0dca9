/**
 * Whether the first bytes of a file are a VMDK, as QEMU's vmdk_probe
 * decides: "KDMV" or "COWD", or a text whose first line that is neither a
 * comment ('#') nor blank (spaces) is "version=1", "version=2" or
 * "version=3" (a descriptor file); or an OVA (ova.ts) holding one.
 */
import { VMDK3_MAGIC, VMDK4_MAGIC } from './constants.js';
import { isOvaHead } from './ova.js';

const VERSION_LINES = ['version=1\n', 'version=2\n', 'version=3\n', 'version=1\r\n', 'version=2\r\n', 'version=3\r\n'];

function isDescriptorText(buf: Uint8Array): boolean {
  const end = buf.length;
  const startsWith = (p: number, text: string) => end - p >= text.length && Array.from(text).every((c, i) => buf[p + i] === c.charCodeAt(0));
  let p = 0;
  while (p < end) {
    if (buf[p] === 0x23 /* # */) {
      while (p < end && buf[p] !== 0x0a) p++;
      p++;
      continue;
    }
    if (buf[p] === 0x20) {
      while (p < end && buf[p] === 0x20) p++;
      if (p < end && buf[p] === 0x0d) p++;
      if (p === end || buf[p] !== 0x0a) return false;
      p++;
      continue;
    }
    return VERSION_LINES.some((line) => startsWith(p, line));
  }
  return false;
}

export function looksLikeVmdk(head: Uint8Array): boolean {
  if (head.length < 4) return false;
  const magic = new DataView(head.buffer, head.byteOffset, 4).getUint32(0, false);
  return magic === VMDK4_MAGIC || magic === VMDK3_MAGIC || isDescriptorText(head) || isOvaHead(head);
}
