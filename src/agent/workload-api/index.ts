/**
 * The agent's SPIFFE Workload API endpoint. One operation, its options and the interface it needs
 * from the agent; everything else in this folder is internal.
 */
export { startWorkloadApi, type IdentityDirectory, type IdentitySource, type WorkloadApi, type WorkloadApiOptions } from './server.js';
export type { IdentitySnapshot } from './responses.js';
