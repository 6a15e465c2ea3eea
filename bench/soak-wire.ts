/**
 * The messages between the soak driver (bench/soak.ts) and its agent worker processes
 * (bench/soak-agents.ts), over the Node IPC channel. Times are epoch milliseconds of the sender's
 * clock (one machine: one clock). Join tokens travel here and nowhere else: never logged.
 */

export interface SoakAgentSpec {
  /** The agent's number in the fleet (0..N-1). */
  i: number;
  /** One-time join token (secret). */
  token: string;
  dataDir: string;
}

/** driver → worker: run these agents. */
export interface StartMessage {
  type: 'start';
  /** Every replica, comma-separated (the agent fails over). */
  serverUrl: string;
  trustBundleFile: string;
  agents: SoakAgentSpec[];
  /** The caller every decision is about (a live entry the policy permits). */
  client: string;
  /** One decision per agent this often (ms). */
  decideEveryMs: number;
  /** Policy and trust bundle long-poll time (s). */
  watchSeconds: number;
}

/** driver → worker: stop deciding, ship every decision record, report, stop. */
export interface FinishMessage { type: 'finish' }

export type ToWorker = StartMessage | FinishMessage;

/** What failed, as the agent saw it. */
export type FailureKind = 'join' | 'renew' | 'policy-poll' | 'bundle-watch' | 'decision-ship';

export type FromWorker =
  /** The agent holds an SVID and a policy bundle. */
  | { type: 'ready'; i: number; at: number; joinMs: number }
  /** Every SVID the agent received (join or renewal), with the serial the control plane must have audited. */
  | { type: 'svid'; i: number; at: number; serial: string; reason: 'join' | 'renew' | 'loaded' }
  /** One renewal attempt: how long the agent's call took. */
  | { type: 'issue'; i: number; at: number; ms: number; ok: boolean }
  /**
   * A policy bundle version installed by the agent's enforcer (at: when it took effect; received: when
   * the long poll's answer that carried it reached the agent's code, before verify and compile).
   */
  | { type: 'policy'; i: number; at: number; received: number; version: number }
  | { type: 'fail'; i: number; at: number; kind: FailureKind; code: string }
  /** Decisions made since the last report, per agent: [i, made, allowed, made with a valid SVID in hand]. */
  | { type: 'decided'; at: number; rows: [number, number, number, number][] }
  | { type: 'final'; agents: FinalAgent[] }
  | { type: 'fatal'; error: string };

export interface FinalAgent {
  i: number;
  /** Decisions made (each was recorded: allow sampling is 1). */
  made: number;
  /** Records the decision log shipped, dropped (lost at the agent), had refused as malformed, still holds. */
  shipped: number;
  dropped: number;
  rejected: number;
  buffered: number;
  spilledBytes: number;
  /** The policy bundle version in force at the end. */
  version: number;
}
