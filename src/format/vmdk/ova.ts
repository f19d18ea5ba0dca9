/**
 * An OVA: a tar (ustar) whose first member is the .ovf descriptor, then
 * the disks (and maybe a manifest). diskmirror opens it as the VMDK it
 * holds, read-only, straight from the tar (a member's bytes are contiguous
 * in it); an OVA holding several disks is refused with their names.
 */
import { type BlockDevice, checkDeviceRequest, readOnlyError } from '../../block/block-device.js';
import { FormatError } from '../image-format.js';

const BLOCK = 512;
/** Most members looked at. */
const MAX_MEMBERS = 10000;

function field(head: Uint8Array, at: number, length: number): string {
  const bytes = head.subarray(at, at + length);
  const end = bytes.indexOf(0);
  return new TextDecoder('utf-8').decode(end < 0 ? bytes : bytes.subarray(0, end));
}

function checksumOk(head: Uint8Array): boolean {
  const stored = parseInt(field(head, 148, 8).trim() || 'x', 8);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : head[i]!;
  return stored === sum;
}

function isUstar(head: Uint8Array): boolean {
  return head.length >= BLOCK && field(head, 257, 5) === 'ustar' && checksumOk(head);
}

function memberName(head: Uint8Array): string {
  const prefix = field(head, 345, 155);
  const name = field(head, 0, 100);
  return prefix ? `${prefix}/${name}` : name;
}

/** A tar whose first member is an .ovf. */
export function isOvaHead(head: Uint8Array): boolean {
  return isUstar(head) && memberName(head).toLowerCase().endsWith('.ovf');
}

export interface TarMember {
  name: string;
  offset: number;
  bytes: number;
}

/** The regular files of the tar in `file`, in order. */
export async function tarMembers(file: BlockDevice): Promise<TarMember[]> {
  const out: TarMember[] = [];
  const head = new Uint8Array(BLOCK);
  let longName: string | null = null;
  for (let at = 0; at + BLOCK <= file.size; ) {
    await file.read(at, head);
    if (head.every((b) => b === 0)) break;
    if (!isUstar(head)) throw new FormatError(`OVA: the tar header at ${at} is damaged (no ustar magic, or a bad checksum)`, 'tar');
    const sizeText = field(head, 124, 12).trim();
    const bytes = sizeText === '' ? 0 : parseInt(sizeText, 8);
    if (!Number.isSafeInteger(bytes) || bytes < 0 || !/^[0-7]*$/.test(sizeText)) throw new FormatError(`OVA: the tar member at ${at} has a bad size '${sizeText}'`, 'tar');
    const data = at + BLOCK;
    if (data + bytes > file.size) throw new FormatError(`OVA: the tar member at ${at} (${bytes} bytes) runs past the end of the file (${file.size} bytes)`, 'tar');
    const type = String.fromCharCode(head[156]!);
    if (type === 'L') {
      const nameBytes = new Uint8Array(Math.min(bytes, 4096));
      await file.read(data, nameBytes);
      longName = field(nameBytes, 0, nameBytes.length);
    } else {
      if ((type === '0' || type === '\0') && out.length < MAX_MEMBERS) out.push({ name: longName ?? memberName(head), offset: data, bytes });
      longName = null;
    }
    at = data + Math.ceil(bytes / BLOCK) * BLOCK;
  }
  return out;
}

/** The one disk of the OVA in `file` (a .vmdk member); several are refused with their names. */
export async function ovaDisk(file: BlockDevice, name: string): Promise<TarMember> {
  const disks = (await tarMembers(file)).filter((m) => m.name.toLowerCase().endsWith('.vmdk'));
  if (disks.length === 0) throw new FormatError(`OVA ${name} holds no .vmdk disk`, 'ova');
  if (disks.length > 1) throw new FormatError(`OVA ${name} holds ${disks.length} disks (${disks.map((d) => d.name).join(', ')}): extract the one to open (tar xf) and open it`, 'ova');
  return disks[0]!;
}

/** Bytes [offset, offset + bytes) of a device, read-only. */
export class SliceDevice implements BlockDevice {
  readonly readOnly = true;
  constructor(
    private readonly inner: BlockDevice,
    private readonly offset: number,
    readonly size: number,
  ) {}
  async read(offset: number, into: Uint8Array): Promise<void> {
    checkDeviceRequest('read', offset, into.length, this.size, true);
    await this.inner.read(this.offset + offset, into);
  }
  async write(offset: number, data: Uint8Array): Promise<void> {
    throw readOnlyError('write', offset, data.length);
  }
  async flush(): Promise<void> {}
  close(): Promise<void> {
    return this.inner.close();
  }
}

