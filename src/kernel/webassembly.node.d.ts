/**
 * WebAssembly as the kernel uses it, for the command line's build: Node has
 * the API at run time, but its type package does not declare it (the
 * browser's libs do, so the page's and the worker's builds leave this file
 * out).
 */
declare namespace WebAssembly {
  interface Memory {
    readonly buffer: ArrayBuffer;
    grow(deltaPages: number): number;
  }
  interface Global {
    value: unknown;
  }
  interface Module {}
  interface Instance {
    readonly exports: Record<string, unknown>;
  }
  type ImportValue = ((...args: never[]) => unknown) | Global | Memory | number;
  function compile(bytes: ArrayBufferView | ArrayBuffer): Promise<Module>;
  /** A trap (unreachable, out of bounds): what the kernel's allocator does when memory cannot grow. */
  class RuntimeError extends Error {}
  function instantiate(module: Module, imports?: Record<string, Record<string, ImportValue>>): Promise<Instance>;
}
