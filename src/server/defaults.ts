/** The control plane's defaults, apart from server.ts so that the CLI can show them without loading the server. */
export const DEFAULTS = {
  trustDomain: 'tessera.test',
  host: '127.0.0.1',
  port: 8443,
  caTtlMs: 24 * 3600_000,
  x509TtlSeconds: 3600,
  jwtTtlSeconds: 300,
  bodyLimit: 64 * 1024,
  role: 'leader' as 'leader' | 'follower',
};
