/**
 * What a failed read or write leads to, per side, as blockjob.c's
 * block_job_error_action decides it.
 */
import type { Errno } from '../qapi/errors.js';
import type { ErrorAction, ErrorPolicy, IoStatus } from '../qapi/policies.js';

export { ERROR_POLICIES, type ErrorAction, type ErrorPolicy, type IoStatus } from '../qapi/policies.js';

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
