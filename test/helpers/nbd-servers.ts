/**
 * Real NBD servers for tests: qemu-nbd over an image file, nbdkit's memory
 * plugin (with its error filter), each on a Unix socket in a temporary
 * directory (or qemu-nbd on a free TCP port), killed when the test is done;
 * and a counting proxy that tells how many bytes a server sent.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import { requireProgram } from './require-program.js';

export function requireNbdServers(): void {
  requireProgram('qemu-nbd', 'a real NBD server');
  requireProgram('nbdkit', 'a real NBD server');
}

export interface NbdServer {
  socket: string;
  /** The URI diskmirror and qemu-img take. */
  uri: string;
  process: ChildProcess;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * Resolves once the server accepts a connection at `path`. The file alone is
 * not enough: it appears at bind(), before listen(), and a client that comes
 * in between is refused (ECONNREFUSED).
 */
async function waitForSocket(path: string, child: ChildProcess, stderr: () => string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`the server exited (${child.exitCode}): ${stderr()}`);
    if (existsSync(path) && (await accepts({ path }))) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`the server did not listen at ${path} in 5 s: ${stderr()}`);
}

/** Whether something accepts a connection at `where` now (the probe hangs up at once). */
function accepts(where: { path: string } | { host: string; port: number }): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const c = createConnection(where as { path: string }, () => (c.destroy(), resolve(true)));
    c.on('error', () => resolve(false));
  });
}

/** Runs a server; resolves once `ready` says it listens. `stop` kills it and waits for its exit. */
async function launch(program: string, args: string[], ready: (child: ChildProcess, stderr: () => string) => Promise<void>, cleanup = () => {}): Promise<Pick<NbdServer, 'process' | 'stop'>> {
  const child = spawn(program, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  await ready(child, () => stderr);
  return {
    process: child,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill(signal);
      await exited;
      cleanup();
    },
  };
}

async function start(program: string, args: string[], socket: string): Promise<NbdServer> {
  rmSync(socket, { force: true });
  const server = await launch(program, args, (child, stderr) => waitForSocket(socket, child, stderr), () => rmSync(socket, { force: true }));
  return { socket, uri: `nbd+unix:///?socket=${socket}`, ...server };
}

/** qemu-nbd serving `image` (persistent, several clients; read-only: -r, a shared lock). */
export function qemuNbd(image: string, socket: string, format: 'raw' | 'qcow2' = 'raw', options: { readOnly?: boolean } = {}): Promise<NbdServer> {
  return start('qemu-nbd', ['-t', '-e', '4', ...(options.readOnly ? ['-r'] : []), '-f', format, '--cache=writeback', '-k', socket, image], socket);
}

/** A TCP port nobody listens on now, on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise<number>((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const p = (probe.address() as { port: number }).port;
      probe.close(() => resolve(p));
    });
  });
}

/** Resolves once something accepts connections at 127.0.0.1:`port`. */
async function waitForPort(port: number, child: ChildProcess, stderr: () => string): Promise<void> {
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`the server exited (${child.exitCode}): ${stderr()}`);
    if (await accepts({ host: '127.0.0.1', port })) return;
    if (i > 200) throw new Error(`nothing listened on ${port} in 10 s: ${stderr()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** qemu-nbd serving `image` over TCP on 127.0.0.1 (a free port), export `name`; `uri` spells the host 127.0.0.1. */
export async function qemuNbdTcp(image: string, name: string): Promise<NbdServer & { port: number }> {
  const port = await freePort();
  const args = ['-t', '-e', '4', '-f', 'raw', '--cache=writeback', '-b', '127.0.0.1', '-p', String(port), '-x', name, image];
  const server = await launch('qemu-nbd', args, (child, stderr) => waitForPort(port, child, stderr));
  return { socket: '', port, uri: `nbd://127.0.0.1:${port}/${name}`, ...server };
}

/** nbdkit's memory plugin of `size`, with filters and their parameters (e.g. error filter settings). */
export function nbdkitMemory(size: string, socket: string, extra: string[] = []): Promise<NbdServer> {
  return start('nbdkit', ['--exit-with-parent', '-f', '-U', socket, ...extra.filter((a) => a.startsWith('--')), 'memory', `size=${size}`, ...extra.filter((a) => !a.startsWith('--'))], socket);
}

/** nbdkit's file plugin over `path`, with filters and their parameters. */
export function nbdkitFile(path: string, socket: string, extra: string[] = []): Promise<NbdServer> {
  return start('nbdkit', ['--exit-with-parent', '-f', '-U', socket, ...extra.filter((a) => a.startsWith('--')), 'file', path, ...extra.filter((a) => !a.startsWith('--'))], socket);
}

/**
 * nbdkit's eval plugin over the file `path` (`size` bytes), every flush
 * failing with EIO (the error filter cannot fail flushes): writes land in
 * the file, each request a dd.
 */
export function nbdkitFlushFails(path: string, size: number, socket: string): Promise<NbdServer> {
  return start(
    'nbdkit',
    [
      '--exit-with-parent',
      '-f',
      '-U',
      socket,
      'eval',
      `get_size=echo ${size}`,
      `pread=dd if='${path}' skip=$4 count=$3 iflag=skip_bytes,count_bytes status=none`,
      `pwrite=dd of='${path}' seek=$4 conv=notrunc oflag=seek_bytes status=none`,
      'can_write=exit 0',
      'can_flush=exit 0',
      'flush=echo EIO the disk refused the flush >&2; exit 1',
    ],
    socket,
  );
}

/** websockify bridging a free local port to a Unix socket; resolves once it listens. */
export async function websockify(target: string): Promise<{ url: string; stop(): Promise<void> }> {
  const port = await freePort();
  const server = await launch('websockify', [`--unix-target=${target}`, `127.0.0.1:${port}`], (child, stderr) => waitForPort(port, child, () => `websockify: ${stderr()}`));
  return { url: `ws://127.0.0.1:${port}/`, stop: () => server.stop() };
}

/** A Unix-socket proxy to `target` that counts the bytes the server sends. */
export async function countingProxy(target: string, socket: string): Promise<{ uri: string; fromServer(): number; close(): Promise<void> }> {
  let bytes = 0;
  rmSync(socket, { force: true });
  const server: Server = createServer((client) => {
    const upstream = createConnection({ path: target });
    upstream.on('data', (d) => (bytes += d.length));
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((r) => server.listen(socket, r));
  return {
    uri: `nbd+unix:///?socket=${socket}`,
    fromServer: () => bytes,
    close: () => new Promise((r) => server.close(() => r())),
  };
}
