/**
 * Cedar authorization for Tessera: the schema, the engine (compile + decide), the signed policy
 * bundle and the policy test-case file.
 */
export { ACTION_TYPE, TESSERA_SCHEMA, WORKLOAD_TYPE, schemaText } from './schema.js';
export { PolicyEngine, type CompileInput, type CompiledPolicySet, type Decision, type DecisionRequest, type PolicyEngineOptions, type PolicyOrigin } from './engine.js';
export { canonicalJson } from '../canonical-json.js';
export { certificateFingerprint } from '../x509.js';
export {
  createPolicyBundle,
  policyHash,
  signPolicyBundle,
  verifyPolicyBundle,
  type PolicyBundle,
  type PolicyBundleSigner,
  type SignedPolicyBundle,
  type VerifyPolicyBundleOptions,
} from './bundle.js';
export { parseCases, runCases, type PolicyCase, type PolicyCaseResult, type PolicyCases } from './cases.js';
export {
  ENTITY_ATTRIBUTE_NAMES,
  LIMITS as POLICY_LIMITS,
  POLICY_ACTIONS,
  type EntityAttributes,
  type PolicyAction,
  type PolicyContext,
  type PolicyEntity,
} from './types.js';
