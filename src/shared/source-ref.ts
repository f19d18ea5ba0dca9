/**
 * Where a job reads from: an image in OPFS, a URL, or a picked file. The
 * page names a source with it (the mirror form's choices) and the worker
 * opens it and keeps it in a job's checkpoint; both say it to a person the
 * same way. `raw` reads the container's bytes as they are (an import copies
 * the file, format and all).
 */
export type SourceRef =
  | { kind: 'opfs'; name: string }
  | { kind: 'url'; url: string; raw?: boolean }
  | { kind: 'file'; name: string; raw?: boolean };

/** How the page and the worker name a source to a person. */
export function describeSource(ref: SourceRef): string {
  return ref.kind === 'opfs' ? ref.name : ref.kind === 'url' ? ref.url : `picked file ${ref.name}`;
}
