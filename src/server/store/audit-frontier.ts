/**
 * The audit tree's stored state, shared by the SQLite and PostgreSQL stores: the meta key of its
 * frontier, the smallest stored subtree, and the frontier parsed from its stored text.
 */
import { TesseraError } from '../../core/errors.js';
import { MerkleFrontier } from '../../core/merkle.js';

/** Meta key of the audit tree's frontier (MerkleFrontierState JSON), updated with every append. */
export const FRONTIER_KEY = 'audit_frontier';
/** Smallest stored subtree: 2^8 leaves, one row per 256 records (0.4 %). */
export const SUBTREE_MIN_LEVEL = 8;

export function treeStateInvalid(message: string): TesseraError {
  return new TesseraError('TESSERA_AUDIT_STATE_INVALID', message);
}

/** The frontier from its stored text (meta `audit_frontier`). */
export function parseFrontier(text: string | undefined): MerkleFrontier {
  if (text === undefined) throw treeStateInvalid('the audit tree frontier is missing');
  let state: unknown;
  try {
    state = JSON.parse(text);
  } catch {
    throw treeStateInvalid('the audit tree frontier is not JSON');
  }
  return MerkleFrontier.fromJSON(state);
}
