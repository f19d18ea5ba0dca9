import { parseArgs, UsageError } from './args.js';
import type { Command } from './commands.js';
import { checkFormat, openImageFile } from './node-images.js';
import type { ImageInfo } from '../format/image-format.js';

function describe(path: string, info: ImageInfo): string {
  const lines = [
    `image: ${path}`,
    `file format: ${info.format}`,
    `virtual size: ${info.virtualSize} bytes`,
    `disk size: ${info.fileSize} bytes`,
  ];
  if (info.clusterSize) lines.push(`cluster_size: ${info.clusterSize}`);
  if (info.backingFile) lines.push(`backing file: ${info.backingFile}`);
  if (info.backingFormat) lines.push(`backing file format: ${info.backingFormat}`);
  return lines.join('\n');
}

export const infoCommand: Command = {
  usage: 'info [-f FMT] [--output=human|json] IMAGE',
  help: 'Shows the format, virtual size and other details of IMAGE.',
  errorExit: 1,
  async run(argv) {
    const { options, positionals } = parseArgs(argv, [
      { name: 'format', short: 'f', value: true },
      { name: 'output', value: true },
    ]);
    if (positionals.length !== 1) throw new UsageError('expected exactly one IMAGE');
    const output = (options.output as string | undefined) ?? 'human';
    if (output !== 'human' && output !== 'json') throw new UsageError(`--output must be human or json, not '${output}'`);
    const path = positionals[0]!;
    const format = checkFormat(options.format as string | undefined);
    const image = await openImageFile(path, { readOnly: true, ...(format ? { format } : {}) });
    try {
      const info = await image.info();
      console.log(output === 'json' ? JSON.stringify({ filename: path, ...info }, null, 2) : describe(path, info));
      return 0;
    } finally {
      await image.close();
    }
  },
};
