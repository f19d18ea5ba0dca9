/**
 * What a failed read or write leads to, per side, as blockjob.c's
 * block_job_error_action decides it.
 */
import type { Errno } from '../block/block-device.js';

export const ERROR_POLICIES = ['report', 'ignore', 'stop', 'enospc', 'auto'] as const;
export type ErrorPolicy = (typeof ERROR_POLICIES)[number];

export type ErrorAction = 'report' | 'ignore' | 'stop';
export type IoStatus = 'ok' | 'failed' | 'nospace';

/** The action for an error with code `errno` under `policy`. */
export function errorAction(policy: ErrorPolicy, errno: Errno): ErrorAction {
  switch (policy) {
    case 'report':
    case 'ignore':
    case 'stop':
      return policy;
    case 'enospc':
    case 'auto':
      return errno === 'ENOSPC' ? 'stop' : 'report';
  }
}

/** The io-status a stop leaves: `nospace` for ENOSPC, else `failed`. */
export function ioStatusFor(errno: Errno): IoStatus {
  return errno === 'ENOSPC' ? 'nospace' : 'failed';
}
