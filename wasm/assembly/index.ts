// The diskmirror kernel: dirty bitmap, zero detection, I/O buffer pool.
export * from './bitmap';
export * from './zero';
export * from './pool';
