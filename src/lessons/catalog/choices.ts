/** The answers a person picks from before a run: the same few words in every lesson. */
export const FAILS = { id: 'fails', label: 'the job fails' };
export const PAUSES = { id: 'pauses', label: 'the job pauses until someone resumes it' };
export const COMPLETES_ANYWAY = { id: 'completes', label: 'the job keeps going and completes' };
export const NEVER_READY = { id: 'never-ready', label: 'the job keeps going but never reaches READY' };
export const CANCELLED = { id: 'cancelled', label: 'the job is cancelled and the target left as it is' };

/** The usual four. */
export const OUTCOMES = [FAILS, PAUSES, COMPLETES_ANYWAY, NEVER_READY];
