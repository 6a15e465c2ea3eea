/**
 * Small helpers shared by the PostgreSQL sub-stores (people, login, devices, gateways).
 */
import type { Pool, PoolClient } from 'pg';

/**
 * Runs `fn` in a transaction on one pooled connection: COMMIT when it resolves, ROLLBACK when it
 * throws (the error is rethrown). The connection goes back to the pool either way.
 */
export async function inTransaction<T>(pool: Pool, fn: (c: PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  // A checked-out client has no 'error' listener of the pool's: a connection the server ends between
  // two statements (PostgreSQL restarted) would emit 'error' unheard and end the process. Heard here,
  // the statement under way fails instead, and the broken connection is not put back in the pool.
  let broken: Error | undefined;
  const onError = (err: Error): void => { broken = err; };
  client.on('error', onError);
  try {
    await client.query('BEGIN');
    const out = await fn(client);
    await client.query('COMMIT');
    return out;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.off('error', onError);
    client.release(broken);
  }
}

/** BIGINT columns come back from `pg` as strings: numbers (ms times, counters) well within 2^53. */
export const num = (v: string | number): number => Number(v);
export const numOrNull = (v: string | number | null): number | null => (v === null ? null : Number(v));

/** SQLite reads a negative LIMIT as "no limit"; PostgreSQL refuses it (LIMIT NULL is "no limit"). */
export const pgLimit = (limit: number): number | null => (limit < 0 ? null : limit);
