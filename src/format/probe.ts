/** Probing by magic: qcow2 starts with "QFI\xfb"; anything else is raw. */
import type { BlockDevice } from '../block/block-device.js';
import type { FormatName } from './image-format.js';

export const QCOW2_MAGIC = 0x514649fb;

export async function probeFormat(file: BlockDevice): Promise<FormatName> {
  if (file.size < 4) return 'raw';
  const head = new Uint8Array(4);
  await file.read(0, head);
  const magic = new DataView(head.buffer).getUint32(0, false);
  return magic === QCOW2_MAGIC ? 'qcow2' : 'raw';
}
