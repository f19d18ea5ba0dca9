/**
 * Probing by magic, as qemu-img probes (each driver looks at the first
 * bytes; the first that knows them wins): qcow2 starts with "QFI\xfb", a
 * dynamic VHD (vpc) with its footer copy "conectix", VDI has the signature
 * 0xbeda107f at 0x40 of a whole 512-byte header, VHDX "vhdxfile" at 0;
 * anything else is raw. A
 * fixed VHD has its footer only at the end: qemu-img probes it as raw, and
 * so does diskmirror (open it with -f vpc). VMDK: a sparse extent starts
 * with "KDMV" (or "COWD"), a descriptor file with comment lines and then
 * "version=1" (2 or 3); an OVA (a tar whose first member is the .ovf) is
 * opened as the VMDK it holds.
 */
import type { BlockDevice } from '../block/block-device.js';
import type { FormatName } from './image-format.js';
import { QCOW2_MAGIC } from './qcow2/constants.js';
import { hasVdiSignature } from './vdi/header.js';
import { hasFileSignature } from './vhdx/header.js';
import { hasFooterCookie } from './vpc/footer.js';
import { looksLikeVmdk } from './vmdk/probe.js';

export { QCOW2_MAGIC };

/** Bytes read to probe, as qemu-img's (a VMDK descriptor's comments may take most of them). */
const PROBE_BYTES = 2048;

export async function probeFormat(file: BlockDevice): Promise<FormatName> {
  if (file.size < 4) return 'raw';
  const head = new Uint8Array(Math.min(PROBE_BYTES, file.size));
  await file.read(0, head);
  const magic = new DataView(head.buffer).getUint32(0, false);
  if (magic === QCOW2_MAGIC) return 'qcow2';
  if (hasFooterCookie(head)) return 'vpc';
  if (hasVdiSignature(head)) return 'vdi';
  if (hasFileSignature(head)) return 'vhdx';
  if (looksLikeVmdk(head)) return 'vmdk';
  return 'raw';
}
