/** How a name says it is an NBD export rather than an image: the page and the engine tell them apart alike. */

/** Whether `name` is meant as an NBD URI (then block/nbd/uri.ts's parseNbdUri checks it). */
export function isNbdUri(name: string): boolean {
  return /^nbd(\+[a-z]+)?:/i.test(name);
}
