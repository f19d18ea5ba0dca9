/** The parts of the qemu-qmp package (a QMP client written for QEMU) the tests use. */
declare module 'qemu-qmp' {
  import { Socket } from 'node:net';
  class QMP extends Socket {
    /** Connects to a Unix socket path (or a port), waits for the greeting and negotiates; then calls back. */
    connect(path: string, callback?: (err: Error | null, qmp?: QMP) => void): this;
    execute(command: string, args: Record<string, unknown> | null, callback: (err: Error | null, value?: unknown) => void): void;
    execute(command: string, callback: (err: Error | null, value?: unknown) => void): void;
    /** The greeting's members, copied onto the client once it arrived. Events arrive as lower-case names: 'block_job_ready'. */
    version?: unknown;
    capabilities?: unknown[];
  }
  export = QMP;
}
