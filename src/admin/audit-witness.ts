/**
 * `tessera audit witness`: a witness of the audit log run from anywhere the admin credential is (a cron
 * job, a second site). It does what every agent does on the policy stream (src/core/witness.ts) with a
 * state file instead of the agent's data directory: fetch the latest checkpoint, check it against the
 * held one (consistency proof through GET /v1/audit/proof/consistency), keep the newer one. The log
 * key is pinned in the state file (from --log-key or, on the first run, the key the server names).
 *
 * With a cosigning key it also cosigns the checkpoint it just verified (C2SP tlog-cosignature v1:
 * "this is the largest consistent tree I have seen") and gives the cosignature to the control plane,
 * which serves it with the checkpoint, so a reader of the note sees that an independent witness saw
 * the same tree.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { cosignCheckpoint, parseCheckpoint } from '../core/checkpoint.js';
import { TesseraError } from '../core/errors.js';
import { writeFileAtomic } from '../core/files.js';
import { encodeVerifierKey, isValidKeyName, parseNote, parseVerifierKey } from '../core/signed-note.js';
import { formatWitnessState, parseWitnessState, witnessStep, type WitnessAlarm, type WitnessState } from '../core/witness.js';
import type {
  AuditCheckpointResponse, AuditConsistencyResponse, AuditCosignatureRequest, AuditCosignatureResponse, WitnessAlarmRequest,
} from '../core/wire/control-plane.js';

export interface WitnessRunOptions {
  stateFile: string;
  /** The log's verifier key to pin on the first run (default: the server's); must match a state's pin. */
  logKey?: string;
  /** Ed25519 private key (PKCS#8 PEM) to cosign with; created 0600 when absent. Needs `name`. */
  cosignKeyFile?: string;
  /** The witness's key name (e.g. `example.org/witness/site-b`). */
  name?: string;
  now?: () => Date;
}

export interface WitnessRunResult {
  /** `created`: first run, the state was written; `advanced`: a newer consistent checkpoint; `unchanged`: the same tree. */
  result: 'created' | 'advanced' | 'unchanged';
  from: number;
  size: number;
  root_hash: string;
  log_key: string;
  state_file: string;
  cosignature?: { name: string; key_id: string; timestamp: number; witness_key: string; key_created: boolean };
}

interface Caller {
  call<T>(method: string, path: string, body?: unknown): Promise<T>;
}

function config(message: string): TesseraError {
  return new TesseraError('TESSERA_CONFIG_INVALID', message);
}

/** Loads the cosigning key, or creates it (0600) when the file does not exist. */
export function loadOrCreateCosignKey(file: string): { privateKey: KeyObject; created: boolean } {
  if (!existsSync(file)) {
    const { privateKey } = generateKeyPairSync('ed25519');
    writeFileAtomic(file, privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, 0o600);
    return { privateKey, created: true };
  }
  // Like ssh: a key others can read is not this witness's own any more.
  if ((statSync(file).mode & 0o077) !== 0) throw config(`the cosigning key ${file} is readable by others; chmod 600 it`);
  let key: KeyObject;
  try {
    key = createPrivateKey(readFileSync(file));
  } catch {
    throw config(`the cosigning key ${file} is not a PEM private key`);
  }
  if (key.asymmetricKeyType !== 'ed25519') throw config(`the cosigning key ${file} is not an Ed25519 key`);
  return { privateKey: key, created: false };
}

function readState(file: string): WitnessState | undefined {
  if (!existsSync(file)) return undefined;
  return parseWitnessState(readFileSync(file, 'utf8'));
}

/**
 * One witness run. Throws TESSERA_AUDIT_WITNESS_ALARM (after reporting it to the control plane, best
 * effort) when the log contradicts the state, which is then left as it was.
 */
export async function runWitness(client: Caller, o: WitnessRunOptions): Promise<WitnessRunResult> {
  if (o.cosignKeyFile !== undefined && !isValidKeyName(o.name)) throw config('--cosign-key needs --name, a key name without spaces or "+"');
  if (o.name !== undefined && o.cosignKeyFile === undefined) throw config('--name is the cosigner\'s name: it needs --cosign-key');
  if (o.logKey !== undefined) parseVerifierKey(o.logKey);
  const held = readState(o.stateFile);
  if (held && o.logKey !== undefined && o.logKey !== held.log_key) throw config(`the state file ${o.stateFile} pins another log key than --log-key`);
  const cosigner = o.cosignKeyFile !== undefined ? loadOrCreateCosignKey(o.cosignKeyFile) : undefined;

  const res = await client.call<AuditCheckpointResponse>('GET', '/v1/audit/checkpoint');
  const note = res?.checkpoint?.note;
  // With a state, the key the server names is what is checked against the pin (another one is an
  // alarm); on the first run the pin is --log-key, else the server's key.
  const logKey = held ? res?.log_key : (o.logKey ?? res?.log_key);
  let proof: unknown = [];
  const shownSize = sizeOf(note);
  if (held && shownSize !== undefined && shownSize > held.size && logKey === held.log_key) {
    const c = await client.call<AuditConsistencyResponse>('GET', `/v1/audit/proof/consistency?from=${held.size}&to=${shownSize}`);
    proof = c?.proof;
  }
  const verdict = witnessStep(held, logKey, note, proof, o.now?.() ?? new Date());
  if (!verdict.ok) {
    await report(client, verdict.alarm);
    throw new TesseraError('TESSERA_AUDIT_WITNESS_ALARM', `${verdict.alarm.kind}: ${verdict.alarm.message}; the state file is kept`);
  }
  if (!held || verdict.advanced) writeFileAtomic(o.stateFile, formatWitnessState(verdict.state), 0o600);
  const out: WitnessRunResult = {
    result: !held ? 'created' : verdict.advanced ? 'advanced' : 'unchanged',
    from: verdict.from, size: verdict.checkpoint.size, root_hash: verdict.checkpoint.rootHash.toString('base64'), log_key: verdict.state.log_key, state_file: o.stateFile,
  };
  if (cosigner) {
    const name = o.name!;
    const timestamp = Math.floor((o.now?.() ?? new Date()).getTime() / 1000);
    const line = cosignCheckpoint(verdict.text, { name, privateKey: cosigner.privateKey }, timestamp);
    const witnessKey = encodeVerifierKey(name, createPublicKey(cosigner.privateKey), 'cosignature/v1');
    const stored = await client.call<AuditCosignatureResponse>('POST', '/v1/audit/cosignatures', { size: out.size, witness_key: witnessKey, line } satisfies AuditCosignatureRequest);
    out.cosignature = { name, key_id: stored.key_id, timestamp, witness_key: witnessKey, key_created: cosigner.created };
  }
  return out;
}

function sizeOf(note: unknown): number | undefined {
  try {
    return parseCheckpoint(parseNote(note as string).text).size;
  } catch {
    return undefined;
  }
}

/** Tells the control plane (best effort: the one that forked may not record it, another may). */
async function report(client: Caller, alarm: WitnessAlarm): Promise<void> {
  try {
    await client.call('POST', '/v1/audit/alarms', alarm satisfies WitnessAlarmRequest);
  } catch {
    // The exit status and message are the alarm; the report is extra.
  }
}
