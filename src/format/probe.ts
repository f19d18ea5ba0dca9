/** Probing by magic: qcow2 starts with "QFI\xfb"; anything else is raw. */
import type { BlockDevice } from '../block/block-device.js';
import type { FormatName } from './image-format.js';
import { QCOW2_MAGIC } from './qcow2/constants.js';

export { QCOW2_MAGIC };

export async function probeFormat(file: BlockDevice): Promise<FormatName> {
  if (file.size < 4) return 'raw';
  const head = new Uint8Array(4);
  await file.read(0, head);
  const magic = new DataView(head.buffer).getUint32(0, false);
  return magic === QCOW2_MAGIC ? 'qcow2' : 'raw';
}
