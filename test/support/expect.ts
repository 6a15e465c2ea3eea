import { expect } from 'vitest';
import { TesseraError } from '../../src/core/errors.js';

/** Runs `fn`, asserts it throws a TesseraError with `code`, and returns that error. */
export function expectTesseraError(fn: () => unknown, code: string): TesseraError {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  expect(thrown).toBeInstanceOf(TesseraError);
  expect((thrown as TesseraError).code).toBe(code);
  return thrown as TesseraError;
}
