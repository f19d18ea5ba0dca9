/**
 * diskmirror map: where the data of an image is, as qemu-img map prints it
 * (JSON: start, length, depth, present, zero, data, offset), following the
 * backing chain.
 */
import type { Command } from './command.js';
import { openForReading, parseSingleImage } from './node-images.js';
import { type MapExtent, mapImage } from '../format/map.js';

export function extentJson(e: MapExtent): string {
  const offset = e.offset !== undefined ? `, "offset": ${e.offset}` : '';
  return `{ "start": ${e.start}, "length": ${e.length}, "depth": ${e.depth}, "present": ${e.present}, "zero": ${e.zero}, "data": ${e.data}${offset}}`;
}

const hex = (n: number) => `0x${n.toString(16)}`;

export const mapCommand: Command = {
  usage: 'map [-f FMT] [--output=human|json] [-U] IMAGE',
  help: [
    'Prints which ranges of IMAGE hold data, read as zeroes, or come from a backing image.',
    'JSON extents: start, length, depth (0: the image itself), present, zero, data, offset (in the file, for data stored as is).',
    '-U (force share) reads without taking locks, so an image in use can be looked at (as qemu-img -U).',
  ].join('\n'),
  errorExit: 1,
  async run(argv) {
    const args = parseSingleImage(argv);
    const { output } = args;
    const image = await openForReading(args);
    try {
      const out: string[] = [];
      const write = (s: string) => {
        out.push(s);
        if (out.length >= 4096) process.stdout.write(out.splice(0).join(''));
      };
      if (output === 'json') {
        let first = true;
        write('[');
        await mapImage(image, (e) => {
          write(`${first ? '' : ',\n'}${extentJson(e)}`);
          first = false;
        });
        write(']\n');
      } else {
        write(`${'Offset'.padEnd(20)}${'Length'.padEnd(20)}${'Mapped to'.padEnd(20)}File\n`);
        await mapImage(image, (e) => {
          if (!e.data || e.offset === undefined) return;
          write(`${hex(e.start).padEnd(20)}${hex(e.length).padEnd(20)}${hex(e.offset).padEnd(20)}${e.depth === 0 ? args.path : `(backing depth ${e.depth})`}\n`);
        });
      }
      process.stdout.write(out.join(''));
      return 0;
    } finally {
      await image.close();
    }
  },
};
