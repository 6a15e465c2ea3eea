/**
 * Blind threshold secrets on the command line:
 *
 *   tessera keyserver --data-dir D --join-token T --trust-bundle F --listen HOST:PORT   (a key server with its own agent)
 *   tessera secret policy create NAME --threshold T --servers URL@SPIFFE_ID,... [--dealer] (admin: the key servers generate the key together)
 *   tessera secret policy show NAME [--epoch E] [--json]                                 (the signed record)
 *   tessera secret policy list                                                           (admin)
 *   tessera secret policy rotate NAME [--threshold T] [--servers ...] [--dealer]         (admin: a new key epoch)
 *   tessera secret policy refresh NAME [--epoch E] [--dealer]                            (admin: new shares, same key)
 *   tessera secret policy reshare NAME --threshold T --servers URL@SPIFFE_ID,...         (admin: same key, new key servers / threshold)
 *   tessera secret policy commit NAME [--epoch E] [--left-out URL@SPIFFE_ID,...]         (admin: a commit the run could not deliver)
 *   tessera secret policy retire NAME --epoch E [--force]                                (admin: delete an epoch's shares)
 *   tessera secret seal --policy NAME [--in F] [--out F] [--record F]                    (offline-capable)
 *   tessera secret unseal --agent-dir D [--in F] [--out F]                               (as the agent's SVID)
 *   tessera secret reseal --agent-dir D [--in F] [--out F]                               (to the newest epoch, as the agent)
 *
 * By default (issue 15) the key servers generate, refresh and reshare k_p among themselves (DKG) and
 * this process only relays their signed messages (src/admin/dkg.ts): no process ever holds k_p.
 * With --dealer (the weaker mode, for offline setups) k_p exists in this process while it is dealt,
 * and is zeroed after. The control plane only ever sees the public commitments (and the transcript). The plaintext and the sealed
 * blob are written only to the requested output.
 */
import { readFileSync } from 'node:fs';
import { Option, type Command } from 'commander';
import { adminClient, adminCredentialTls, agentTls, readCredential, svidClient } from '../admin/clients.js';
import { createEpoch, refresh as dkgRefresh, reshare as dkgReshare, rotate as dkgRotate, type DkgRunResult } from '../admin/dkg.js';
import { commitLater, dealEpoch, fetchRecordWith, readSavedRecord, refreshEpoch, retireEpoch, rotateEpoch, sealToRecord, unsealWithAgentDir, withSecretAdmin, type SecretAdmin } from '../admin/secrets.js';
import { TesseraError, isTesseraError } from '../core/errors.js';
import { writeFileAtomic } from '../core/files.js';
import { createLogger } from '../core/log.js';
import { parseRateLimit } from '../core/rate-limit.js';
import { SECRET_POLICY_ID_RULE, isSecretPolicyId, parseSealedText, ready, sealedToText } from '../core/secrets/index.js';
import type { SecretPolicyRecord, SecretPolicyServer } from '../core/secrets/policy-record.js';
import { parseSpiffeId } from '../core/spiffe-id.js';
import { pemDecodeAll } from '../core/x509.js';
import { DEFAULT_RATE_LIMIT } from '../keyserver/service.js';
import { metricsListenOption, serveMetricsFlag } from './metrics.js';
import { telemetryFlags, telemetryOption } from './telemetry-flags.js';
import type { SecretPolicyListResponse } from '../core/wire/control-plane.js';
import { output, table, type GlobalOptions, type Run } from './context.js';

type Json = Record<string, unknown>;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/** `URL@SPIFFE_ID` list (comma-separated, repeatable), indices 1..n in order. */
export function parseServers(specs: string[]): SecretPolicyServer[] {
  const items = specs.flatMap((s) => s.split(',')).map((s) => s.trim()).filter((s) => s.length > 0);
  return items.map((item, i) => {
    const at = item.lastIndexOf('@spiffe://');
    if (at <= 0) throw new TesseraError('TESSERA_CONFIG_INVALID', '--servers must be URL@SPIFFE_ID,..., e.g. https://10.0.0.1:8600@spiffe://td/keyserver/1');
    const url = item.slice(0, at);
    let spiffeId: string;
    try {
      spiffeId = parseSpiffeId(item.slice(at + 1)).id;
    } catch (err) {
      throw new TesseraError('TESSERA_CONFIG_INVALID', `--servers: ${isTesseraError(err) ? err.message : 'not a SPIFFE ID'}`);
    }
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      throw new TesseraError('TESSERA_CONFIG_INVALID', `--servers: ${url} is not a URL`);
    }
    if (u.protocol !== 'https:') throw new TesseraError('TESSERA_CONFIG_INVALID', `--servers: ${url} must be https`);
    return { url: url.replace(/\/+$/, ''), spiffeId, index: i + 1 };
  });
}

export { parseRateLimit };

function checkServers(servers: SecretPolicyServer[]): void {
  if (servers.length < 1 || servers.length > 255) throw new TesseraError('TESSERA_CONFIG_INVALID', '--servers must list 1..255 key servers');
  if (new Set(servers.map((s) => s.spiffeId)).size !== servers.length) throw new TesseraError('TESSERA_CONFIG_INVALID', '--servers lists a SPIFFE ID twice');
}

function checkThreshold(t: number, n: number, allowSingleServer: boolean): void {
  if (!Number.isInteger(t) || t < 1 || t > n) throw new TesseraError('TESSERA_CONFIG_INVALID', `--threshold must be an integer in 1..${n}`);
  // With t = 1 every key server alone holds the whole key: the point of the design is lost.
  if (t === 1 && !allowSingleServer) throw new TesseraError('TESSERA_CONFIG_INVALID', '--threshold 1 lets any one key server decrypt; use 2 or more (or --allow-single-server for a test setup)');
}

/** The admin's credential for the key servers and the control plane; progress lines on stderr unless --json. */
function withAdmin<T>(g: GlobalOptions, fn: (admin: SecretAdmin) => Promise<T>): Promise<T> {
  return withSecretAdmin(g, (line) => { if (!g.json) process.stderr.write(`tessera: ${line}\n`); }, fn);
}

/** Prints which key servers failed an unseal (their codes, never material). */
function reportFailure(f: { spiffeId: string; index: number; code: string }): void {
  process.stderr.write(`tessera: key server ${f.spiffeId} (index ${f.index}) failed: ${f.code}\n`);
}

function readInput(file: string | undefined): Buffer {
  return file === undefined || file === '-' ? readFileSync(0) : readFileSync(file);
}

function writeOutput(file: string | undefined, data: Buffer | string): void {
  if (file === undefined || file === '-') process.stdout.write(data);
  else writeFileAtomic(file, data, 0o600);
}

function epochOpt(v: unknown): number | undefined {
  if (v === undefined) return undefined;
  const s = String(v);
  if (!/^\d{1,10}$/.test(s) || Number(s) > 0xffffffff) throw new TesseraError('TESSERA_CONFIG_INVALID', '--epoch must be an integer in 0..2^32-1');
  return Number(s);
}

function policyId(v: unknown): string {
  if (!isSecretPolicyId(v)) throw new TesseraError('TESSERA_CONFIG_INVALID', `a secret policy name is ${SECRET_POLICY_ID_RULE}`);
  return v;
}

function summary(r: SecretPolicyRecord): string {
  return [
    `secret policy ${r.id}, key epoch ${r.epoch}, share generation ${r.generation}: ${r.t} of ${r.n} key servers, signed ${r.createdAt}`,
    `public key ${r.commitments[0]!}`,
    table(['INDEX', 'SPIFFE ID', 'URL'], r.servers.map((s) => [String(s.index), s.spiffeId, s.url])),
  ].join('\n');
}

/** Stopped key servers, misbehaviour and failed commits of a DKG run, as warnings on stderr (public facts only). */
function dkgWarnings(res: DkgRunResult): void {
  const w = (line: string): void => { process.stderr.write(`tessera: warning: ${line}\n`); };
  for (const l of res.lost) w(`key server ${l.spiffeId} stopped answering at round ${l.round} (${l.code}); the protocol went on without it${res.record.servers.some((s) => s.spiffeId === l.spiffeId) ? ': it holds no share of this generation; replace it with `secret policy reshare`' : ''}`);
  for (const s of res.verdict.stopped) if (!res.lost.some((l) => l.spiffeId === s.spiffe_id)) w(`key server ${s.spiffe_id} sent nothing from round ${s.round} on`);
  for (const m of res.verdict.misbehaviour) w(`key server ${m.spiffe_id} misbehaved at round ${m.round}: ${m.what}`);
  for (const e of res.verdict.excluded) w(`dealer index ${e.index} left out: ${e.why}`);
  if (res.recovered) w(`the control plane's answer was lost (${res.recovered.code}); the record was then found signed with this result, so the key servers were told to commit`);
  for (const c of res.commits.filter((x) => !x.ok)) w(`key server ${c.spiffeId} (index ${c.index}) did not commit: ${c.code ?? 'error'}; it cannot answer the new generation until \`tessera secret policy commit ${res.record.id} --epoch ${res.record.epoch}\` reaches it (within 10 minutes)`);
}

/** The JSON facts of a DKG run. */
function dkgJson(res: DkgRunResult): Json {
  return {
    mode: 'dkg',
    transcript: res.verdict.transcript,
    qual: res.verdict.qual,
    confirmed_by: res.verdict.confirmed_by,
    stopped: [...res.lost.map((l) => ({ spiffe_id: l.spiffeId, round: l.round, code: l.code })), ...res.verdict.stopped.filter((s) => !res.lost.some((l) => l.spiffeId === s.spiffe_id))],
    misbehaviour: res.verdict.misbehaviour,
    excluded: res.verdict.excluded,
    committed: res.commits.filter((c) => c.ok).map((c) => c.spiffeId),
    not_committed: res.commits.filter((c) => !c.ok).map((c) => ({ spiffe_id: c.spiffeId, code: c.code })),
    ...(res.recovered ? { recovered_after: res.recovered.code } : {}),
  };
}

const DKG_HELP = `
By default the key servers generate the key together (distributed key generation, Gennaro-Jarecki-
Krawczyk-Rabin): this CLI only relays their signed messages, which it cannot read, the control plane
checks the whole transcript before it signs the record, and no process ever holds the key. A key
server that stops mid-way is left out (reported as a warning) as long as t remain; misbehaviour is
proven from the transcript and reported. --dealer draws the key in this process and deals the
shares instead: a weaker mode (this machine sees the key) for setups without the DKG routes.`;

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

export function secretCommands(program: Command, run: Run, parseListen: (v: string) => { host: string; port: number }, untilSignal: (stop: () => Promise<void>) => Promise<void>): void {
  telemetryFlags(metricsListenOption(program.command('keyserver')), 'each caller\'s unseal counts (action class unseal)')
    .description('run a blind-secrets key server: its own agent (SVID), Cedar secret:unseal decisions, mTLS on --listen')
    .requiredOption('--data-dir <dir>', 'state directory (agent SVID, sealed key shares)')
    .option('--join-token <token>', 'one-time join token (only until the agent has an identity); or $TESSERA_JOIN_TOKEN')
    .option('--trust-bundle <file>', 'CA bundle to trust for the first connection')
    .requiredOption('--listen <host:port>', 'address to serve on')
    .option('--rate-limit <rate>', 'evaluations allowed per caller identity: PER_SECOND[:BURST]', `${DEFAULT_RATE_LIMIT.perSecond}:${DEFAULT_RATE_LIMIT.burst}`)
    .addOption(new Option('--log-level <level>', 'log level').choices(['debug', 'info', 'warn', 'error']).default('info'))
    .addHelpText('after', '\nAlso required: --server https://HOST:PORT (the control plane URL). Shares are sealed at rest with $TESSERA_KEK or DATA_DIR/kek.key.')
    .action(run(async (g, o: Json) => {
      if (!g.server) throw new TesseraError('TESSERA_CONFIG_INVALID', 'the key server needs --server https://HOST:PORT (the control plane URL)');
      const log = createLogger({ level: o.logLevel as 'info', pretty: !g.json });
      const joinToken = (o.joinToken as string | undefined) ?? process.env.TESSERA_JOIN_TOKEN;
      const listen = parseListen(String(o.listen));
      const rateLimit = parseRateLimit(String(o.rateLimit));
      const telemetry = telemetryOption(o);
      // Loaded here, not at the top: every other `tessera` command would pay for them.
      const [{ startKeyServerNode }, { KeyServerMetrics }] = await Promise.all([import('../keyserver/node.js'), import('../keyserver/metrics.js')]);
      const metrics = o.metricsListen !== undefined ? new KeyServerMetrics() : undefined;
      const metricsListener = await serveMetricsFlag(o.metricsListen, () => metrics!.registry, log, parseListen);
      const node = await startKeyServerNode({
        serverUrl: g.server, dataDir: String(o.dataDir), listen, log,
        ...(joinToken ? { joinToken } : {}),
        ...(o.trustBundle ? { trustBundleFile: String(o.trustBundle) } : {}),
        rateLimit, telemetry,
        ...(metrics ? { metrics } : {}),
      }).catch(async (err: unknown) => {
        await metricsListener?.close();
        throw err;
      });
      log.info('key server ready', { url: node.keyServer.url, spiffe_id: node.agent.spiffeId });
      await untilSignal(async () => {
        await node.close();
        await metricsListener?.close();
      });
    }));

  const secret = program.command('secret').description('blind threshold secrets: policies, seal, unseal');
  const policy = secret.command('policy').description('secret policies (the key servers generate the key, this CLI relays; the control plane signs the public record)');

  policy.command('create').description('generate a new policy key on the key servers (DKG; --dealer: deal it from here) and publish the signed record (admin)')
    .argument('<name>', `policy name, ${SECRET_POLICY_ID_RULE}`)
    .requiredOption('--threshold <t>', 'how many key servers must answer to unseal (at least 2)')
    .option('--allow-single-server', 'accept --threshold 1 (one key server can decrypt: tests only)')
    .requiredOption('--servers <list...>', 'key servers URL@SPIFFE_ID, comma-separated, in share-index order')
    .option('--epoch <n>', 'key epoch', '1')
    .option('--dealer', 'weaker mode: draw the key in this process and deal the shares (offline setups; this machine sees the key)')
    .addHelpText('after', DKG_HELP)
    .action(run(async (g, name: string, o: Json) => {
      const id = policyId(name);
      const epoch = epochOpt(o.epoch)!;
      const servers = parseServers(o.servers as string[]);
      const n = servers.length;
      const t = Number(o.threshold);
      checkServers(servers);
      checkThreshold(t, n, Boolean(o.allowSingleServer));
      await withAdmin(g, async (admin) => {
        if (o.dealer) {
          const res = await dealEpoch(admin, { id, epoch, t, servers });
          output(g, { id, epoch, t, n, mode: 'dealer', public_key: res.record.commitments[0], record: res.record, signed: res.signed }, () => `created ${summary(res.record)}\n(dealt from this process: --dealer)`);
          return;
        }
        const res = await createEpoch(admin, { id, epoch, t, servers });
        dkgWarnings(res);
        output(g, { id, epoch, t, n, public_key: res.record.commitments[0], ...dkgJson(res), record: res.record, signed: res.signed }, () => `created ${summary(res.record)}\n(generated by the key servers together; transcript ${res.verdict.transcript})`);
        if (res.commits.some((c) => !c.ok)) process.exitCode = 1;
      });
    }));

  policy.command('rotate').description('a new key epoch (newest + 1), generated by the key servers (DKG; --dealer: dealt from here); blobs sealed under older epochs still open until retired (admin)')
    .argument('<name>', 'policy name')
    .option('--threshold <t>', 'threshold of the new epoch (default: the current one\'s)')
    .option('--servers <list...>', 'key servers of the new epoch, URL@SPIFFE_ID,... (default: the current ones)')
    .option('--dealer', 'weaker mode: draw the new key in this process and deal the shares')
    .addHelpText('after', DKG_HELP)
    .action(run(async (g, name: string, o: Json) => {
      const id = policyId(name);
      const servers = o.servers ? parseServers(o.servers as string[]) : undefined;
      const t = o.threshold === undefined ? undefined : Number(o.threshold);
      if (servers) checkServers(servers);
      if (t !== undefined) checkThreshold(t, servers?.length ?? 255, false);
      const choice = { ...(t !== undefined ? { t } : {}), ...(servers ? { servers } : {}) };
      await withAdmin(g, async (admin) => {
        let res: { record: SecretPolicyRecord; signed: unknown; previous: number };
        let facts: Json = { mode: 'dealer' };
        if (o.dealer) res = await rotateEpoch(admin, id, choice);
        else {
          const r = await dkgRotate(admin, id, choice);
          dkgWarnings(r);
          facts = dkgJson(r);
          if (r.commits.some((c) => !c.ok)) process.exitCode = 1;
          res = r;
        }
        if (res.record.t === 1 && !servers) process.stderr.write('tessera: warning: the new epoch keeps threshold 1\n');
        output(g, { id, epoch: res.record.epoch, previous_epoch: res.previous, t: res.record.t, n: res.record.n, public_key: res.record.commitments[0], ...facts, record: res.record, signed: res.signed }, () => [
          `rotated ${summary(res.record)}`,
          `new seals use epoch ${res.record.epoch}; blobs sealed under epoch ${res.previous} and older still open until \`tessera secret policy retire ${id} --epoch E\``,
        ].join('\n'));
      });
    }));

  policy.command('refresh').description('give the key servers new shares of the same key (new share generation; dealerless by default); old shares are deleted (admin)')
    .argument('<name>', 'policy name')
    .option('--epoch <n>', 'key epoch (default: the newest active one)')
    .option('--dealer', 'weaker mode: deal a sharing of zero from this process (the older protocol)')
    .addHelpText('after', `
By default every key server deals a random sharing of zero to the others (checked by everyone against
public commitments); the new shares open the same key, the old ones are deleted on commit. A key server
that stops mid-way is left out, but a refresh needs every one of them to end up with a new share:
run it again, or replace the server with \`secret policy reshare\`.`)
    .action(run(async (g, name: string, o: Json) => {
      const id = policyId(name);
      const epoch = epochOpt(o.epoch);
      await withAdmin(g, async (admin) => {
        if (o.dealer) {
          const res = await refreshEpoch(admin, id, epoch);
          const missing = res.commits.filter((c) => !c.ok);
          for (const m of missing) process.stderr.write(`tessera: key server ${m.spiffeId} (index ${m.index}) did not commit: ${m.code ?? 'error'}; it answers the new generation from its prepared share; run refresh again to finish\n`);
          output(g, { id, epoch: res.record.epoch, generation: res.record.generation, mode: 'dealer', public_key: res.record.commitments[0], committed: res.commits.filter((c) => c.ok).map((c) => c.spiffeId), not_committed: missing.map((m) => ({ spiffe_id: m.spiffeId, code: m.code })), signed: res.signed }, () =>
            `refreshed ${id} epoch ${res.record.epoch} to share generation ${res.record.generation} (same public key ${res.record.commitments[0]!}); ${res.commits.length - missing.length} of ${res.record.n} key servers deleted their old share`);
          if (missing.length) process.exitCode = 1;
          return;
        }
        const res = await dkgRefresh(admin, id, epoch);
        dkgWarnings(res);
        const committed = res.commits.filter((c) => c.ok).length;
        output(g, { id, epoch: res.record.epoch, generation: res.record.generation, public_key: res.record.commitments[0], ...dkgJson(res), signed: res.signed }, () =>
          `refreshed ${id} epoch ${res.record.epoch} to share generation ${res.record.generation} (same public key ${res.record.commitments[0]!}), dealerless; ${committed} of ${res.record.n} key servers committed their new share`);
        if (committed < res.record.n) process.exitCode = 1;
      });
    }));

  policy.command('reshare').description('share the same key among new key servers and/or a new threshold (dealerless); blobs sealed before still open (admin)')
    .argument('<name>', 'policy name')
    .requiredOption('--threshold <t>', 'threshold of the new sharing (at least 2)')
    .requiredOption('--servers <list...>', 'the new key servers URL@SPIFFE_ID, comma-separated, in share-index order (as for create)')
    .option('--epoch <n>', 'key epoch (default: the newest active one)')
    .option('--allow-single-server', 'accept --threshold 1 (tests only)')
    .addHelpText('after', `
Verifiable secret redistribution: each current key server deals its own share to the new servers, checked
against the current public commitments; the new servers combine them into shares of the same key (same
public key, so every blob still opens). Key servers left out of --servers delete their share on commit.
A current key server that cannot be reached is left out of the dealers as long as the current threshold
remains, which is how a dead key server is replaced.`)
    .action(run(async (g, name: string, o: Json) => {
      const id = policyId(name);
      const servers = parseServers(o.servers as string[]);
      const t = Number(o.threshold);
      checkServers(servers);
      checkThreshold(t, servers.length, Boolean(o.allowSingleServer));
      await withAdmin(g, async (admin) => {
        const res = await dkgReshare(admin, id, { t, servers, ...(o.epoch !== undefined ? { epoch: epochOpt(o.epoch)! } : {}) });
        dkgWarnings(res);
        output(g, { id, epoch: res.record.epoch, generation: res.record.generation, t: res.record.t, n: res.record.n, previous: res.previous, public_key: res.record.commitments[0], ...dkgJson(res), record: res.record, signed: res.signed }, () =>
          `reshared ${id} epoch ${res.record.epoch} from ${res.previous.t} of ${res.previous.n} to ${summary(res.record)}\n(same public key; blobs sealed before still open)`);
        if (res.commits.some((c) => !c.ok && res.record.servers.some((s) => s.spiffeId === c.spiffeId))) process.exitCode = 1;
      });
    }));

  policy.command('commit').description('finish a key generation on key servers reported as not committed (within 10 minutes of the run) (admin)')
    .argument('<name>', 'policy name')
    .option('--epoch <n>', 'key epoch (default: the newest)')
    .option('--left-out <list...>', 'key servers URL@SPIFFE_ID,... a reshare left out, whose deletion was not confirmed: each deletes its old share')
    .addHelpText('after', `
A create, rotate, refresh or reshare reports a key server as not committed when its commit got no answer.
That server keeps its finished session (in memory, for 10 minutes): this sends it the signed record of
the epoch, and it commits the share that record names. Every key server of the record is asked; one that
already holds it answers so (nothing changes). After the 10 minutes, or a restart of that key server,
the share is gone: give it one again with \`secret policy reshare\`.

A key server a reshare left out must delete its share (old shares of t servers would still rebuild the
key): name it with --left-out and it deletes any older share of the epoch, whenever this runs.`)
    .action(run(async (g, name: string, o: Json) => {
      const id = policyId(name);
      const leftOut = o.leftOut === undefined ? [] : parseServers(o.leftOut as string[]);
      await withAdmin(g, async (admin) => {
        const res = await commitLater(admin, id, epochOpt(o.epoch), leftOut);
        const failed = res.outcomes.filter((c) => !c.ok);
        for (const f of failed) process.stderr.write(`tessera: key server ${f.spiffeId}${f.left ? ' (left out)' : ` (index ${f.index})`} did not commit: ${f.code ?? 'TESSERA_INTERNAL'}\n`);
        const named = res.outcomes.filter((c) => !c.left);
        const now = named.filter((c) => c.committed === true).map((c) => c.spiffeId);
        const held = named.filter((c) => c.committed === false).map((c) => c.spiffeId);
        const left = res.outcomes.filter((c) => c.left && c.ok);
        output(g, {
          id, epoch: res.record.epoch, generation: res.record.generation, committed: now, already_committed: held,
          ...(leftOut.length ? { deleted: left.filter((c) => c.committed).map((c) => c.spiffeId), held_none: left.filter((c) => !c.committed).map((c) => c.spiffeId) } : {}),
          failed: failed.map((f) => ({ spiffe_id: f.spiffeId, ...(f.left ? { left_out: true } : { index: f.index }), code: f.code })),
        }, () => `${id} epoch ${res.record.epoch}, share generation ${res.record.generation}: ${now.length} key server(s) committed now, ${held.length} already had, ${failed.length} failed (of ${res.outcomes.length})`
          + (leftOut.length ? `; left out: ${left.filter((c) => c.committed).length} deleted an old share, ${left.filter((c) => !c.committed).length} held none` : ''));
        if (failed.length) process.exitCode = 1;
      });
    }));

  policy.command('retire').description('delete a key epoch\'s shares from the key servers: blobs sealed under it never open again (admin)')
    .argument('<name>', 'policy name')
    .requiredOption('--epoch <n>', 'key epoch to retire')
    .option('--force', 'retire even the only active epoch (nothing can be sealed to the policy afterwards)')
    .action(run(async (g, name: string, o: Json) => {
      const id = policyId(name);
      const epoch = epochOpt(o.epoch)!;
      await withAdmin(g, async (admin) => {
        const res = await retireEpoch(admin, id, epoch, Boolean(o.force));
        const kept = res.deletes.filter((d) => !d.ok);
        for (const k of kept) process.stderr.write(`tessera: key server ${k.spiffeId} (index ${k.index}) still holds its share: ${k.code ?? 'error'}; fewer than t remain, so the epoch cannot open anything\n`);
        output(g, { id, epoch, retired: res.retired, deleted: res.deletes.filter((d) => d.ok).map((d) => d.spiffeId), kept: kept.map((k) => ({ spiffe_id: k.spiffeId, code: k.code })) }, () =>
          res.retired ? `retired ${id} epoch ${epoch}: ${res.deletes.length - kept.length} of ${res.deletes.length} key servers deleted their share` : `${id} epoch ${epoch} was already retired`);
      });
    }));

  policy.command('show').description('print a secret policy\'s signed record (verified); --json gives the envelope for offline sealing')
    .argument('<name>', 'policy name')
    .option('--epoch <n>', 'key epoch (default: the newest)')
    .option('--agent-dir <dir>', 'fetch as this agent (default: the admin credential)')
    .action(run(async (g, name: string, o: Json) => {
      const id = policyId(name);
      await ready();
      const tls = o.agentDir ? agentTls(String(o.agentDir)) : adminCredentialTls(g);
      const client = o.agentDir ? svidClient(String(o.agentDir), g.server) : adminClient(g);
      try {
        const { record, signed } = await fetchRecordWith(client, id, epochOpt(o.epoch), pemDecodeAll(tls.ca, 'CERTIFICATE'));
        output(g, signed, () => summary(record));
      } finally {
        client.close();
      }
    }));

  policy.command('list').description('list secret policies (admin)').action(run(async (g) => {
    const client = adminClient(g);
    try {
      const res = await client.call<SecretPolicyListResponse>('GET', '/v1/secret-policies');
      output(g, res, () => (res.policies.length ? table(['ID', 'EPOCH', 'GENERATION', 'CREATED', 'RETIRED'], res.policies.map((p) => [String(p.id), String(p.epoch), String(p.generation ?? 1), String(p.created_at), p.retired_at ? String(p.retired_at) : '-'])) : 'no secret policies'));
    } finally {
      client.close();
    }
  }));

  secret.command('seal').description('seal stdin (or --in) under a secret policy\'s public key; prints the sealed text')
    .requiredOption('--policy <name>', 'secret policy name')
    .option('--epoch <n>', 'key epoch (default: the newest)')
    .option('--in <file>', 'plaintext file (default: stdin)')
    .option('--out <file>', 'where to write the sealed text (default: stdout)')
    .option('--record <file>', 'a saved signed record (`tessera secret policy show NAME --json`): seal offline')
    .option('--trust-bundle <file>', 'trust bundle to verify the record with (default: the admin or agent directory\'s)')
    .option('--agent-dir <dir>', 'fetch the record as this agent (default: the admin credential)')
    .action(run(async (g, o: Json) => {
      await ready();
      const id = policyId(o.policy);
      const epoch = epochOpt(o.epoch);
      const bundlePem = o.trustBundle ? readCredential(String(o.trustBundle), 'trust bundle') : o.agentDir ? agentTls(String(o.agentDir)).ca : adminCredentialTls(g).ca;
      const trusted = pemDecodeAll(bundlePem, 'CERTIFICATE');
      let record: SecretPolicyRecord;
      if (o.record) {
        record = readSavedRecord(String(o.record), id, epoch, trusted);
      } else {
        const client = o.agentDir ? svidClient(String(o.agentDir), g.server) : adminClient(g);
        try {
          record = (await fetchRecordWith(client, id, epoch, trusted)).record;
        } finally {
          client.close();
        }
      }
      const plain = readInput(o.in as string | undefined);
      const blob = sealToRecord(plain, record);
      plain.fill(0);
      writeOutput(o.out as string | undefined, `${sealedToText(blob)}\n`);
    }));

  secret.command('unseal').description('unseal (stdin or --in) as an agent: blinded evaluation by the key servers, checked by their proofs')
    .requiredOption('--agent-dir <dir>', 'the agent\'s data directory (its SVID authenticates to the key servers)')
    .option('--in <file>', 'sealed text file (default: stdin)')
    .option('--out <file>', 'where to write the plaintext (default: stdout; a file is written 0600)')
    .action(run(async (g, o: Json) => {
      const text = readInput(o.in as string | undefined).toString('utf8').trim();
      const plain = await unsealWithAgentDir(text, String(o.agentDir), g.server, reportFailure);
      writeOutput(o.out as string | undefined, plain);
      // stdout may still be flushing a pipe asynchronously: only a file write can be followed by zeroing.
      if (o.out !== undefined && o.out !== '-') plain.fill(0);
    }));

  secret.command('reseal').description('re-seal a sealed text under the newest key epoch of its policy (after a rotation), as an agent allowed to unseal it; the plaintext never leaves this process')
    .requiredOption('--agent-dir <dir>', 'the agent\'s data directory (its SVID authenticates to the key servers and the control plane)')
    .option('--in <file>', 'sealed text file (default: stdin)')
    .option('--out <file>', 'where to write the new sealed text (default: stdout; may be the --in file)')
    .action(run(async (g, o: Json) => {
      await ready();
      const text = readInput(o.in as string | undefined).toString('utf8').trim();
      const from = parseSealedText(text);
      const agentDir = String(o.agentDir);
      const plain = await unsealWithAgentDir(text, agentDir, g.server, reportFailure);
      try {
        const client = svidClient(agentDir, g.server);
        let record: SecretPolicyRecord;
        try {
          record = (await fetchRecordWith(client, from.policyId, undefined, pemDecodeAll(agentTls(agentDir).ca, 'CERTIFICATE'))).record;
        } finally {
          client.close();
        }
        const blob = sealToRecord(plain, record);
        writeOutput(o.out as string | undefined, `${sealedToText(blob)}\n`);
        if (!g.json) process.stderr.write(`tessera: re-sealed ${record.id} from key epoch ${from.epoch} to ${record.epoch}\n`);
      } finally {
        plain.fill(0);
      }
    }));
}
