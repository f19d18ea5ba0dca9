/**
 * Real NBD servers for tests: qemu-nbd over an image file, nbdkit's memory
 * plugin (with its error filter), each on a Unix socket in a temporary
 * directory, killed when the test is done; and a counting proxy that tells
 * how many bytes a server sent.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';

export function requireNbdServers(): void {
  for (const program of ['qemu-nbd', 'nbdkit']) {
    try {
      execFileSync(program, ['--version'], { stdio: 'ignore' });
    } catch {
      throw new Error(`${program} is required: sudo apt-get install -y qemu-utils nbdkit (.ci/run installs them)`);
    }
  }
}

export interface NbdServer {
  socket: string;
  /** The URI diskmirror and qemu-img take. */
  uri: string;
  process: ChildProcess;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

async function waitForSocket(path: string, child: ChildProcess, stderr: () => string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`the server exited (${child.exitCode}): ${stderr()}`);
    if (existsSync(path)) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`the server did not make ${path} in 5 s: ${stderr()}`);
}

async function start(program: string, args: string[], socket: string): Promise<NbdServer> {
  rmSync(socket, { force: true });
  const child = spawn(program, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  await waitForSocket(socket, child, () => stderr);
  return {
    socket,
    uri: `nbd+unix:///?socket=${socket}`,
    process: child,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill(signal);
      await exited;
      rmSync(socket, { force: true });
    },
  };
}

/** qemu-nbd serving `image` (persistent, several clients; read-only: -r, a shared lock). */
export function qemuNbd(image: string, socket: string, format: 'raw' | 'qcow2' = 'raw', options: { readOnly?: boolean } = {}): Promise<NbdServer> {
  return start('qemu-nbd', ['-t', '-e', '4', ...(options.readOnly ? ['-r'] : []), '-f', format, '--cache=writeback', '-k', socket, image], socket);
}

/** nbdkit's memory plugin of `size`, with filters and their parameters (e.g. error filter settings). */
export function nbdkitMemory(size: string, socket: string, extra: string[] = []): Promise<NbdServer> {
  return start('nbdkit', ['--exit-with-parent', '-f', '-U', socket, ...extra.filter((a) => a.startsWith('--')), 'memory', `size=${size}`, ...extra.filter((a) => !a.startsWith('--'))], socket);
}

/** nbdkit's file plugin over `path`, with filters and their parameters. */
export function nbdkitFile(path: string, socket: string, extra: string[] = []): Promise<NbdServer> {
  return start('nbdkit', ['--exit-with-parent', '-f', '-U', socket, ...extra.filter((a) => a.startsWith('--')), 'file', path, ...extra.filter((a) => !a.startsWith('--'))], socket);
}

/** websockify bridging a free local port to a Unix socket; resolves once it listens. */
export async function websockify(target: string): Promise<{ url: string; stop(): Promise<void> }> {
  const port = await new Promise<number>((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const p = (probe.address() as { port: number }).port;
      probe.close(() => resolve(p));
    });
  });
  const child = spawn('websockify', [`--unix-target=${target}`, `127.0.0.1:${port}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`websockify exited: ${stderr}`);
    const up = await new Promise<boolean>((resolve) => {
      const c = createConnection({ host: '127.0.0.1', port }, () => (c.destroy(), resolve(true)));
      c.on('error', () => resolve(false));
    });
    if (up) break;
    if (i > 200) throw new Error(`websockify did not listen on ${port} in 10 s: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `ws://127.0.0.1:${port}/`,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
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
