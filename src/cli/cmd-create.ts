/**
 * diskmirror create: a new raw, qcow2, vpc, vdi, vhdx or vmdk image, with qemu-img create's
 * options. With a backing file and no SIZE, the backing image's size.
 */
import { dirname, isAbsolute, resolve as resolvePath } from 'node:path';
import { parseArgs, UsageError } from './args.js';
import type { Command } from './command.js';
import { describeCreate, parseCreateOptions } from './image-options.js';
import { checkFormat, createImageFile, openImageFile, store } from './node-images.js';
import { ImageConflictError } from '../block/block-device.js';
import { FormatError } from '../format/image-format.js';
import { parseSize } from '../util/size.js';

export const createCommand: Command = {
  usage: 'create [-f FMT] [-o OPTIONS] [-b BACKING [-F BACKING_FMT]] [-q] IMAGE [SIZE]',
  help: [
    'Creates IMAGE (format raw, the default, qcow2, vpc, vdi, vhdx or vmdk) of SIZE bytes (K, M, G, T suffixes; rounded up to 512).',
    'qcow2 OPTIONS (-o key=value,...): compat=0.10|1.1, cluster_size=512..2M, refcount_bits=1..64,',
    '  extended_l2=on|off, compression_type=zlib|zstd, lazy_refcounts=on|off, preallocation=off|metadata,',
    '  backing_file=NAME, backing_fmt=FMT. raw: preallocation=off|full.',
    'vpc: subformat=dynamic|fixed, force_size=on|off (keep SIZE instead of rounding it to a CHS geometry). vdi: static=on|off.',
    'vhdx: subformat=dynamic|fixed, block_size=1M..256M (0: from SIZE, as qemu-img), log_size=1M...',
    'vmdk: subformat=monolithicSparse|streamOptimized, adapter_type=ide|buslogic|lsilogic|legacyESX.',
    'A backing file is named relative to IMAGE; without SIZE the image is as large as it.',
  ].join('\n'),
  errorExit: 1,
  // qemu-img create exits 1 for every error, bad usage included.
  usageExit: 1,
  async run(argv) {
    const { options, positionals } = parseArgs(argv, [
      { name: 'format', short: 'f', value: true },
      { name: 'options', short: 'o', value: true, repeat: true },
      { name: 'backing', short: 'b', value: true },
      { name: 'backing-format', short: 'F', value: true },
      { name: 'quiet', short: 'q' },
    ]);
    if (positionals.length < 1 || positionals.length > 2) throw new UsageError('expected IMAGE and SIZE');
    const [path, sizeText] = positionals as [string, string | undefined];
    const format = checkFormat((options.format as string | undefined) ?? 'raw')!;
    const fields = parseCreateOptions(options.options as string[] | undefined);
    if (options.backing !== undefined) fields.backingFile = options.backing as string;
    if (options['backing-format'] !== undefined) {
      const f = checkFormat(options['backing-format'] as string, 'backing format');
      if (f) fields.backingFormat = f;
    }
    let size = sizeText !== undefined ? parseSize(sizeText, 'SIZE') : fields.size;
    delete fields.size;
    if (fields.backingFile !== undefined) {
      if (format !== 'qcow2') throw new UsageError(`${format} images cannot have a backing file`);
      // Before a word is printed or a file touched, as qemu-img refuses it.
      if (store.backingName(fields.backingFile, path) === store.resolve(path)) {
        throw new ImageConflictError(path, `${path}: Trying to create an image with the same filename as the backing file; nothing was written`);
      }
      // Opening the backing image checks it exists and gives its format and size.
      const backingPath = isAbsolute(fields.backingFile) ? fields.backingFile : resolvePath(dirname(resolvePath(path)), fields.backingFile);
      const backing = await openImageFile(backingPath, { readOnly: true, ...(fields.backingFormat ? { format: fields.backingFormat } : {}) }).catch((err: unknown) => {
        if (err instanceof ImageConflictError) throw err;
        throw new FormatError(`Could not open backing file '${fields.backingFile}': ${err instanceof Error ? err.message : String(err)}`, 'backing_file');
      });
      try {
        fields.backingFormat ??= backing.format;
        size ??= backing.size;
      } finally {
        await backing.close();
      }
    } else if (fields.backingFormat !== undefined) {
      throw new UsageError('-F (backing format) needs -b (backing file)');
    }
    if (size === undefined) throw new UsageError('expected IMAGE and SIZE');
    size = Math.ceil(size / 512) * 512;
    if (!options.quiet) console.log(describeCreate(path, format, size, fields));
    const image = await createImageFile(path, { format, size, ...fields });
    await image.close();
    return 0;
  },
};
