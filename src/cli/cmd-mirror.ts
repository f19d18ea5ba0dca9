/**
 * diskmirror mirror: runs a mirror job between two image files until READY,
 * completes it, and exits 0; or exits 1 with the error.
 */
import { existsSync } from 'node:fs';
import { parseArgs, UsageError } from './args.js';
import type { Command } from './commands.js';
import { checkFormat, createImageFile, openImageFile } from './node-images.js';
import type { ImageFormat } from '../format/image-format.js';
import { MirrorJob } from '../mirror/mirror-job.js';
import { SYNC_MODES, type SyncMode } from '../mirror/options.js';
import { parseSize } from '../util/size.js';

export const mirrorCommand: Command = {
  usage: 'mirror [-f FMT] [-O FMT] [--sync full|top|none] [--granularity N] [--buf-size N] [--speed N] SRC DST',
  help: [
    'Mirrors SRC into DST with QEMU\'s mirror semantics, completes once READY, and exits 0.',
    'DST is created (format -O, default: the source\'s) unless it exists with the same size.',
  ].join('\n'),
  async run(argv) {
    const { options, positionals } = parseArgs(argv, [
      { name: 'format', short: 'f', value: true },
      { name: 'target-format', short: 'O', value: true },
      { name: 'sync', value: true },
      { name: 'granularity', value: true },
      { name: 'buf-size', value: true },
      { name: 'speed', value: true },
    ]);
    if (positionals.length !== 2) throw new UsageError('expected SRC and DST');
    const [srcPath, dstPath] = positionals as [string, string];
    const sync = (options.sync as string | undefined) ?? 'full';
    if (!SYNC_MODES.includes(sync as SyncMode)) throw new UsageError(`--sync must be full, top or none, not '${sync}'`);
    const size = (name: string) => (options[name] === undefined ? undefined : parseSize(options[name] as string, `--${name}`));
    const srcFormat = checkFormat(options.format as string | undefined);
    let source: ImageFormat | undefined;
    let target: ImageFormat | undefined;
    try {
      source = await openImageFile(srcPath, srcFormat ? { format: srcFormat } : {});
      const targetCreated = !existsSync(dstPath);
      target = targetCreated
        ? await createImageFile(dstPath, { format: checkFormat(options['target-format'] as string | undefined) ?? source.format, size: source.size })
        : await openImageFile(dstPath, {});
      const job = await MirrorJob.create({
        source,
        target,
        targetCreated,
        options: {
          sync: sync as SyncMode,
          ...(size('granularity') !== undefined ? { granularity: size('granularity')! } : {}),
          ...(size('buf-size') !== undefined ? { 'buf-size': size('buf-size')! } : {}),
          ...(size('speed') !== undefined ? { speed: size('speed')! } : {}),
        },
      });
      job.on((e) => {
        if (e.event === 'BLOCK_JOB_READY') job.complete();
      });
      job.start();
      const result = await job.result;
      if (result.outcome !== 'completed') {
        console.error(`diskmirror mirror: ${result.error ?? result.outcome}`);
        return 1;
      }
      return 0;
    } finally {
      await source?.close();
      await target?.close();
    }
  },
};
