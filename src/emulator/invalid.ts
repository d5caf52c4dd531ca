/** How the emulator refuses bad input, in one place: RECGATE_INVALID_REQUEST naming the field. */
import type { z } from 'zod';
import { createError } from '../errors.js';

export function invalid(message: string): never {
  throw createError('RECGATE_INVALID_REQUEST', { message });
}

/** The first issue zod found, as `field: message` (`body` when it is about the whole body). */
export function invalidInput(issue: z.core.$ZodIssue): never {
  invalid(`${issue.path.length > 0 ? issue.path.join('.') : 'body'}: ${issue.message}`);
}
