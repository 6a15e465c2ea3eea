/**
 * Just-in-time grants as the signed policy bundle carries them: each approved grant is one link of
 * the Tessera grant template, with its own time window. Pure data and pure functions (no Cedar
 * loaded here; bundle.ts checks shapes with it).
 *
 * A Cedar template may only put slots in the scope (`?principal`, `?resource`), never in the
 * `when` clause, so the window cannot be a slot value: each grant gets its own template, the
 * fixed form below with the grant's action and window written in, linked once with its principal
 * and resource (`templateLinks`). The agent builds the Cedar text itself from these checked fields:
 * nothing in a bundle is pasted into Cedar as free text.
 *
 * ```cedar
 * permit (principal == ?principal, action == Tessera::Action::"<action>", resource == ?resource)
 * when { context.time >= <start> && context.time < <expiry> };
 * ```
 *
 * `context.time` is the deciding agent's own clock (seconds since the epoch), so a grant stops
 * being honoured at its expiry even by an agent cut off from the control plane.
 */
import { isSpiffeId } from '../spiffe-id.js';
import { isPolicyAction, type PolicyAction } from './types.js';

export interface BundleGrant {
  /** `g-` and 16 lowercase hex digits. */
  id: string;
  principal: string;
  action: PolicyAction;
  resource: string;
  /** Seconds since the epoch: the first second the grant is honoured. */
  start: number;
  /** Seconds since the epoch: the first second the grant is no longer honoured. */
  expiry: number;
}

export const GRANT_ID = /^g-[0-9a-f]{16}$/;
/** Grants in one bundle. */
export const MAX_BUNDLE_GRANTS = 1000;
/** Longest grant window a bundle may carry (7 days): the control plane's own limit. */
export const MAX_GRANT_SECONDS = 7 * 86_400;
/** The policy id of a grant's link, as a decision's `reasons` name it. */
export const grantPolicyId = (id: string): string => `grant:${id}`;

const KEYS = ['action', 'expiry', 'id', 'principal', 'resource', 'start'];

/** Checks one grant's shape; returns a clean copy or the reason it is refused. */
export function checkGrant(v: unknown): BundleGrant | string {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'must be an object';
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o).sort();
  if (keys.length !== KEYS.length || keys.some((k, i) => k !== KEYS[i])) return `must have exactly the fields ${KEYS.join(', ')}`;
  if (typeof o.id !== 'string' || !GRANT_ID.test(o.id)) return 'id must be g- and 16 hex digits';
  if (typeof o.principal !== 'string' || !isSpiffeId(o.principal)) return 'principal must be a SPIFFE ID';
  if (typeof o.resource !== 'string' || !isSpiffeId(o.resource)) return 'resource must be a SPIFFE ID';
  if (!isPolicyAction(o.action)) return 'action must be one of the schema\'s actions';
  const { start, expiry } = o;
  if (typeof start !== 'number' || !Number.isSafeInteger(start) || start < 0) return 'start must be whole seconds since the epoch';
  if (typeof expiry !== 'number' || !Number.isSafeInteger(expiry) || expiry <= start || expiry - start > MAX_GRANT_SECONDS) {
    return `expiry must be after start, at most ${MAX_GRANT_SECONDS} s later`;
  }
  return { id: o.id, principal: o.principal, action: o.action, resource: o.resource, start, expiry };
}

/** The Cedar text of a grant's own template (its action and window written in). */
export function grantTemplate(g: BundleGrant): string {
  return `permit (principal == ?principal, action == Tessera::Action::${JSON.stringify(g.action)}, resource == ?resource) when { context.time >= ${g.start} && context.time < ${g.expiry} };`;
}

/** Templates and links (cedar-wasm `PolicySet` parts) for a bundle's grants. */
export function grantPolicyParts(grants: readonly BundleGrant[], workloadType: string): {
  templates: Record<string, string>;
  templateLinks: { templateId: string; newId: string; values: Record<string, { type: string; id: string }> }[];
} {
  const templates: Record<string, string> = {};
  const templateLinks = grants.map((g) => {
    templates[`grant-template:${g.id}`] = grantTemplate(g);
    return {
      templateId: `grant-template:${g.id}`,
      newId: grantPolicyId(g.id),
      values: { '?principal': { type: workloadType, id: g.principal }, '?resource': { type: workloadType, id: g.resource } },
    };
  });
  return { templates, templateLinks };
}

/**
 * The decision clock of an enforcer: `context.time` in seconds, rounded down to the minute so that
 * decisions stay cacheable (the decision cache is keyed by the context), except that it never
 * rounds back across a grant's start or expiry. So `context.time >= start` and `context.time <
 * expiry` hold exactly when the real clock says so, and a cached allow cannot outlive a grant: at
 * the boundary `time` takes a new value, which no cached decision was made for.
 */
export class GrantClock {
  /** Every grant start and expiry, ascending, unique. */
  readonly #bounds: number[];
  /** The current bucket [from, to) of whole seconds, and its time value. */
  #from = 0;
  #to = 0;

  constructor(grants: readonly BundleGrant[]) {
    this.#bounds = [...new Set(grants.flatMap((g) => [g.start, g.expiry]))].sort((a, b) => a - b);
  }

  /**
   * The first grant start or expiry after the wall clock `nowMs`, in ms, or undefined when none is
   * ahead. A cache that cannot key on {@link time} (HAProxy's, keyed by the minute) is flushed there.
   */
  nextBound(nowMs: number): number | undefined {
    const s = Math.floor(nowMs / 1000);
    for (const b of this.#bounds) if (b > s) return b * 1000;
    return undefined;
  }

  /** `context.time` for the wall clock `nowMs`. Cheap when called again within the same bucket. */
  time(nowMs: number): number {
    const s = Math.floor(nowMs / 1000);
    if (s >= this.#from && s < this.#to) return this.#from;
    const minute = s - (((s % 60) + 60) % 60);
    let from = minute;
    let to = minute + 60;
    for (const b of this.#bounds) {
      if (b <= s) {
        if (b > from) from = b;
      } else {
        if (b < to) to = b;
        break;
      }
    }
    this.#from = from;
    this.#to = to;
    return from;
  }
}
