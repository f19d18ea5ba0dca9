/**
 * Error policies as QAPI spells them (BlockdevOnError), the action one
 * takes for an error, and the io-status a stop leaves. What a policy
 * decides for an errno is the engine's (mirror/error-policy.ts).
 */

export const ERROR_POLICIES = ['report', 'ignore', 'stop', 'enospc', 'auto'] as const;
export type ErrorPolicy = (typeof ERROR_POLICIES)[number];

export type ErrorAction = 'report' | 'ignore' | 'stop';
export type IoStatus = 'ok' | 'failed' | 'nospace';
