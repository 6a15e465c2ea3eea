/**
 * Secret policies (blind threshold secrets):
 *
 *   POST /v1/secret-policies        (admin)  {id, epoch, t, n, commitments, servers, dkg?} → 201 {id, epoch, record, signed, dkg?}
 *        `dkg`: the key servers' DKG transcript (src/core/wire/dkg.ts DkgTranscriptWire), checked by
 *        ./dkg-check.ts before anything is signed; without it the record is a dealer's (weaker mode)
 *   GET  /v1/secret-policies        (admin)  → {policies: [{id, epoch, generation, created_at, retired_at}]}
 *   GET  /v1/secret-policies/:id    (a live workload's SVID, or the admin) [?epoch=] → {id, epoch, generation, created_at, signed}
 *        without ?epoch: the newest epoch not retired; a retired epoch → 410 TESSERA_SECRET_EPOCH_RETIRED
 *   POST /v1/secret-policies/:id/epochs/:epoch/refresh  (admin) {generation, commitments, dkg?, t?, servers?} → {id, epoch, generation, record, signed, dkg?}
 *        `dkg` of kind refresh (same servers and t) or reshare (with the new `t` and `servers`)
 *   POST /v1/secret-policies/:id/epochs/:epoch/retire   (admin) → {id, epoch, retired, retired_at}
 *   POST /v1/secret-policies/:id/provision-authorization (admin, a client certificate) {epoch, op, key_servers}
 *        → {authorization, jti, expires_at}: the admin policy judges `admin:secret.policy.<op>` (writes:
 *        fresh MFA), then the CA signs a statement for the key servers (src/core/secrets/provision-authorization.ts)
 *
 * Request and response types: src/core/wire/control-plane.ts. Every call is audited. The records carry only public material (commitments, key server URLs).
 */
import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest, RequestPayload } from 'fastify';
import type { AdminAction } from '../../core/policy/admin-schema.js';
import { PROVISION_OPS, encodeProvisionAuthorization, signProvisionAuthorization, type ProvisionOp } from '../../core/secrets/provision-authorization.js';
import { isSpiffeId } from '../../core/spiffe-id.js';
import { TesseraError } from '../../core/errors.js';
import { SECRET_POLICY_ID_RULE, isSecretPolicyId, ready } from '../../core/secrets/index.js';
import type { SecretPolicyServer } from '../../core/secrets/policy-record.js';
import { adminCaller, audited, liveOrAdminCaller } from '../api/handlers.js';
import { body, int, queryInt } from '../../common/api/validate.js';
import type { ServerContext } from '../context.js';
import { DKG_BODY_LIMIT, checkDkgTranscript } from './dkg-check.js';
import type { DkgVerdictWire, ProvisionAuthorizationResponse, CreateSecretPolicyResponse, RefreshSecretPolicyResponse, RetireSecretPolicyResponse, SecretPolicyListResponse, SecretPolicyResponse } from '../../core/wire/control-plane.js';
import type { SecretPolicyService } from './service.js';

/** Lifetime of a provisioning authorization (seconds; key servers accept at most MAX_PROVISION_AUTHORIZATION_SECONDS). */
export const PROVISION_AUTHORIZATION_SECONDS = 90;

function serverList(v: unknown): SecretPolicyServer[] {
  if (!Array.isArray(v) || v.length > 255) throw new TesseraError('TESSERA_BAD_REQUEST', '"servers" must be a list of at most 255 {url, spiffeId, index}');
  return v.map((s) => {
    const o = body(s, ['url', 'spiffeId', 'index']);
    return { url: o.url as string, spiffeId: o.spiffeId as string, index: o.index as number };
  });
}

/** The verdict's public facts in the audit record (never a share: the transcript carries none in the clear). */
function auditVerdict(detail: Record<string, unknown>, v: DkgVerdictWire): void {
  detail.kind = v.kind;
  detail.transcript = v.transcript;
  detail.qual = v.qual;
  detail.stopped = v.stopped;
  detail.misbehaviour = v.misbehaviour;
  detail.excluded = v.excluded;
  detail.confirmed_by = v.confirmed_by;
}

export function secretPolicyRoutes(app: FastifyInstance, ctx: ServerContext, service: SecretPolicyService = ctx.secrets): void {
  app.post<{ Params: { id: string } }>('/v1/secret-policies/:id/provision-authorization', (req) => audited(ctx, req, 'secret.provision.authorize', async (ev) => {
    const { id } = req.params;
    if (!isSecretPolicyId(id)) throw new TesseraError('TESSERA_BAD_REQUEST', `the policy id must be ${SECRET_POLICY_ID_RULE}`);
    ev.target = `secret:${id}`;
    const b = body(req.body, ['epoch', 'op', 'key_servers']);
    const op = b.op;
    if (typeof op !== 'string' || !(PROVISION_OPS as readonly string[]).includes(op)) throw new TesseraError('TESSERA_BAD_REQUEST', `"op" must be one of ${PROVISION_OPS.join(', ')}`);
    const epoch = int(b, 'epoch', { min: 0, max: 0xffffffff })!;
    const ks = b.key_servers;
    if (!Array.isArray(ks) || ks.length < 1 || ks.length > 255 || !ks.every((s) => typeof s === 'string' && isSpiffeId(s)) || new Set(ks).size !== ks.length) {
      throw new TesseraError('TESSERA_BAD_REQUEST', '"key_servers" must be 1 to 255 distinct SPIFFE IDs');
    }
    ev.detail.op = op;
    ev.detail.epoch = epoch;
    ev.detail.key_servers = ks;
    // The very decision the control-plane half of the operation gets (fresh MFA for these writes).
    const caller = await adminCaller(ctx, req, ev, `admin:secret.policy.${op as ProvisionOp}`);
    // Bound to a certificate the key server sees in its mTLS handshake: a console session has none.
    if (caller.serial.startsWith('session:')) throw new TesseraError('TESSERA_FORBIDDEN', 'a provisioning authorization is bound to a client certificate: run the tessera CLI after `tessera login`');
    const iat = Math.floor(Date.now() / 1000);
    const exp = Math.min(iat + PROVISION_AUTHORIZATION_SECONDS, Math.floor(caller.notAfter / 1000));
    if (exp <= iat) throw new TesseraError('TESSERA_FORBIDDEN', 'the client certificate expires now: run `tessera login` again');
    const jti = randomBytes(18).toString('base64url');
    const signed = signProvisionAuthorization({ v: 1, jti, caller: caller.spiffeId, serial: caller.serial, op: op as ProvisionOp, policy: id, epoch, keyServers: ks as string[], iat, exp }, ctx.ca.signingMaterial());
    ev.detail.jti = jti;
    ev.succeed();
    return { authorization: encodeProvisionAuthorization(signed), jti, expires_at: new Date(exp * 1000).toISOString() } satisfies ProvisionAuthorizationResponse;
  }));

  /**
   * The two routes that take a DKG transcript read bodies up to DKG_BODY_LIMIT (8 MiB, against the
   * server's 64 KiB), so the caller must be an admin before the body is read: an identity allowed
   * nothing cannot make the control plane buffer and parse 8 MiB. The handler decides again with the
   * body; a refusal here is audited like one of the handler's.
   */
  const adminFirst = (action: AdminAction, auditAction: string) => ({
    bodyLimit: DKG_BODY_LIMIT,
    preParsing: async (req: FastifyRequest, _reply: FastifyReply, payload: RequestPayload): Promise<RequestPayload> => {
      const ev = ctx.audit.begin(auditAction, `ip:${req.ip}`);
      try {
        await adminCaller(ctx, req, ev, action);
      } catch (err) {
        ev.detail.before_body = true;
        if (req.authFailure) ev.detail.auth_failure = req.authFailure;
        await ctx.audit.record(ev, err);
        throw err;
      }
      return payload;
    },
  });

  app.post('/v1/secret-policies', adminFirst('admin:secret.policy.create', 'secret.policy.create'), (req, reply) => audited(ctx, req, 'secret.policy.create', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:secret.policy.create');
    const b = body(req.body, ['id', 'epoch', 't', 'n', 'commitments', 'servers', 'dkg']);
    if (!isSecretPolicyId(b.id)) throw new TesseraError('TESSERA_BAD_REQUEST', `"id" must be ${SECRET_POLICY_ID_RULE}`);
    ev.target = `secret:${b.id}`;
    const epoch = int(b, 'epoch', { min: 0, max: 0xffffffff })!;
    const t = int(b, 't', { min: 1, max: 255 })!;
    const n = int(b, 'n', { min: 1, max: 255 })!;
    if (!Array.isArray(b.commitments) || b.commitments.length > 255) throw new TesseraError('TESSERA_BAD_REQUEST', '"commitments" must be a list of base64url points');
    const servers = serverList(b.servers);
    ev.detail.epoch = epoch;
    ev.detail.mode = b.dkg === undefined ? 'dealer' : 'dkg';
    let dkg: DkgVerdictWire | undefined;
    if (b.dkg !== undefined) {
      await ready();
      dkg = checkDkgTranscript(b.dkg, { route: 'create', id: b.id, epoch, t, servers, commitments: b.commitments as string[] }, ctx.ca.bundle().x509Authorities, ctx.trustDomain).verdict;
      auditVerdict(ev.detail, dkg);
    }
    const { record, signed } = await service.create({ id: b.id, epoch, t, n, commitments: b.commitments as string[], servers });
    ev.detail.t = t;
    ev.detail.n = n;
    ev.detail.servers = record.servers.map((s) => s.spiffeId);
    ev.succeed();
    return reply.code(201).send({ id: record.id, epoch: record.epoch, record, signed, ...(dkg ? { dkg } : {}) } satisfies CreateSecretPolicyResponse);
  }));

  app.get('/v1/secret-policies', (req) => audited(ctx, req, 'secret.policy.list', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:secret.policy.list');
    const all = await service.list();
    ev.succeed();
    return { policies: all.map((p) => ({ id: p.id, epoch: p.epoch, generation: p.generation, created_at: p.createdAt, retired_at: p.retiredAt })) } satisfies SecretPolicyListResponse;
  }));

  const epochParams = (params: { id: string; epoch: string }): { id: string; epoch: number } => {
    if (!isSecretPolicyId(params.id)) throw new TesseraError('TESSERA_BAD_REQUEST', `the policy id must be ${SECRET_POLICY_ID_RULE}`);
    if (!/^(0|[1-9]\d{0,9})$/.test(params.epoch) || Number(params.epoch) > 0xffffffff) throw new TesseraError('TESSERA_BAD_REQUEST', 'the key epoch must be an integer in 0..2^32-1');
    return { id: params.id, epoch: Number(params.epoch) };
  };

  app.post<{ Params: { id: string; epoch: string } }>('/v1/secret-policies/:id/epochs/:epoch/refresh', adminFirst('admin:secret.policy.refresh', 'secret.policy.refresh'), (req) => audited(ctx, req, 'secret.policy.refresh', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:secret.policy.refresh');
    const { id, epoch } = epochParams(req.params);
    ev.target = `secret:${id}`;
    ev.detail.epoch = epoch;
    const b = body(req.body, ['generation', 'commitments', 't', 'servers', 'dkg']);
    const generation = int(b, 'generation', { min: 2, max: 0xffffffff })!;
    if (!Array.isArray(b.commitments) || b.commitments.length > 255) throw new TesseraError('TESSERA_BAD_REQUEST', '"commitments" must be a list of base64url points');
    const commitments = b.commitments as string[];
    ev.detail.generation = generation;
    ev.detail.mode = b.dkg === undefined ? 'dealer' : 'dkg';
    // A new threshold and key servers only with a reshare transcript: nobody else can show the new shares exist.
    const reshare = b.t !== undefined || b.servers !== undefined;
    if (reshare && (b.t === undefined || b.servers === undefined)) throw new TesseraError('TESSERA_BAD_REQUEST', 'a reshare names both "t" and "servers"');
    if (reshare && b.dkg === undefined) throw new TesseraError('TESSERA_BAD_REQUEST', '"t" and "servers" change only with a reshare transcript ("dkg")');
    const t = reshare ? int(b, 't', { min: 1, max: 255 })! : undefined;
    const servers = reshare ? serverList(b.servers) : undefined;
    let dkg: DkgVerdictWire | undefined;
    if (b.dkg !== undefined) await ready();
    const { record, signed } = await service.refresh(id, epoch, generation, commitments, {
      ...(t !== undefined && servers !== undefined ? { t, servers } : {}),
      ...(b.dkg !== undefined ? {
        check: (current) => {
          dkg = checkDkgTranscript(b.dkg, { route: 'refresh', id, epoch, t: t ?? current.t, servers: servers ?? current.servers, commitments, current }, ctx.ca.bundle().x509Authorities, ctx.trustDomain).verdict;
          if (reshare !== (dkg.kind === 'reshare')) throw new TesseraError('TESSERA_SECRET_POLICY_INVALID', reshare ? 'new "t" and "servers" need a reshare transcript' : 'a reshare transcript needs the new "t" and "servers"');
          auditVerdict(ev.detail, dkg);
        },
      } : {}),
    });
    if (reshare) {
      ev.detail.t = record.t;
      ev.detail.n = record.n;
      ev.detail.servers = record.servers.map((s) => s.spiffeId);
    }
    ev.succeed();
    return { id, epoch, generation: record.generation, record, signed, ...(dkg ? { dkg } : {}) } satisfies RefreshSecretPolicyResponse;
  }));

  app.post<{ Params: { id: string; epoch: string } }>('/v1/secret-policies/:id/epochs/:epoch/retire', (req) => audited(ctx, req, 'secret.policy.retire', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:secret.policy.retire');
    const { id, epoch } = epochParams(req.params);
    ev.target = `secret:${id}`;
    ev.detail.epoch = epoch;
    if (req.body !== undefined && req.body !== null) body(req.body, []);
    const r = await service.retire(id, epoch);
    ev.detail.already = !r.retired;
    ev.succeed();
    return { id, epoch, retired: r.retired, retired_at: r.retiredAt } satisfies RetireSecretPolicyResponse;
  }));

  app.get<{ Params: { id: string } }>('/v1/secret-policies/:id', (req) => audited(ctx, req, 'secret.policy.show', async (ev) => {
    await liveOrAdminCaller(ctx, req, ev, 'admin:secret.policy.show');
    const { id } = req.params;
    if (!isSecretPolicyId(id)) throw new TesseraError('TESSERA_BAD_REQUEST', `the policy id must be ${SECRET_POLICY_ID_RULE}`);
    ev.target = `secret:${id}`;
    const q = req.query as Record<string, unknown> | undefined;
    const epoch = q && q.epoch !== undefined ? queryInt(q, 'epoch', 0, 0, 0xffffffff) : undefined;
    const p = await service.get(id, epoch);
    if (!p) throw new TesseraError('TESSERA_NOT_FOUND', epoch === undefined ? 'no such secret policy, or every key epoch is retired' : 'no such secret policy (or key epoch)');
    ev.detail.epoch = p.epoch;
    if (p.retiredAt !== null) throw new TesseraError('TESSERA_SECRET_EPOCH_RETIRED', `key epoch ${p.epoch} of ${p.id} was retired at ${p.retiredAt}`);
    ev.succeed();
    return { id: p.id, epoch: p.epoch, generation: p.generation, created_at: p.createdAt, signed: p.signed } satisfies SecretPolicyResponse;
  }));
}
