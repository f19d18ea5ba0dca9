/**
 * Where a job reads from: an image in OPFS, a URL, a picked file, or an NBD
 * export reached through a WebSocket bridge (`uri`: nbd+ws://HOST:PORT/EXPORT,
 * read as `format`, raw by default, as qemu-img reads an export). The
 * page names a source with it (the mirror form's choices) and the worker
 * opens it and keeps it in a job's checkpoint; both say it to a person the
 * same way. `raw` reads the container's bytes as they are (an import copies
 * the file, format and all).
 */
export type SourceRef =
  | { kind: 'opfs'; name: string }
  | { kind: 'url'; url: string; raw?: boolean }
  | { kind: 'file'; name: string; raw?: boolean }
  | { kind: 'nbd'; uri: string; format?: 'raw' | 'qcow2' };

/** How the page and the worker name a source to a person. */
export function describeSource(ref: SourceRef): string {
  switch (ref.kind) {
    case 'opfs':
      return ref.name;
    case 'url':
      return ref.url;
    case 'nbd':
      return ref.uri;
    case 'file':
      return `picked file ${ref.name}`;
  }
}
