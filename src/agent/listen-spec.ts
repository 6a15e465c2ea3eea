/**
 * The agent's listener and target specs, as the `tessera agent` flags and the node configuration
 * (`tessera agent --node FILE`) write them: `HOST:PORT` (`[::1]:PORT` for IPv6) and the outbound
 * proxy's `LISTEN=TARGET@SPIFFE_ID`. Errors name `what` (a flag, or a path in the config file).
 */
import { TesseraError } from '../core/errors.js';
import { parseSpiffeId } from '../core/spiffe-id.js';

export interface HostPort { host: string; port: number }

/** An outbound proxy: the app talks plain to `listen` (a TCP port or a Unix socket), the agent calls `upstream` over mTLS. */
export interface OutboundSpec {
  listen: HostPort | { path: string };
  upstream: HostPort & { expectedId: string };
}

const HOST_PORT_RE = /^(?:\[([0-9a-fA-F:]+)\]|([^:]+)):(\d{1,5})$/;

/**
 * `HOST:PORT` (port 0: any free port).
 *
 * @example
 * parseHostPort('127.0.0.1:8443', '--inbound') // { host: '127.0.0.1', port: 8443 }
 */
export function parseHostPort(value: unknown, what: string): HostPort {
  if (typeof value !== 'string') throw new TesseraError('TESSERA_CONFIG_INVALID', `${what} HOST:PORT is required here`);
  const m = HOST_PORT_RE.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new TesseraError('TESSERA_CONFIG_INVALID', `${what} must be HOST:PORT, e.g. 127.0.0.1:8443`);
  return { host: (m[1] ?? m[2])!, port };
}

/**
 * `LISTEN=TARGET@SPIFFE_ID`, LISTEN `unix:/ABSOLUTE/PATH` or `HOST:PORT`.
 *
 * @example
 * parseOutboundSpec('unix:/run/tessera/orders.sock=10.0.0.7:9443@spiffe://td/orders', '--outbound')
 */
export function parseOutboundSpec(spec: unknown, what: string): OutboundSpec {
  const m = typeof spec === 'string' ? /^([^=]+)=([^@]+)@(spiffe:\/\/\S+)$/.exec(spec) : null;
  if (!m) throw new TesseraError('TESSERA_CONFIG_INVALID', `${what} must be LISTEN=TARGET@SPIFFE_ID, e.g. unix:/run/tessera/orders.sock=10.0.0.7:9443@spiffe://td/orders`);
  const upstream = parseHostPort(m[2], `${what} target`);
  const unix = m[1]!.startsWith('unix:') ? m[1]!.slice(5) : undefined;
  if (unix !== undefined && !unix.startsWith('/')) throw new TesseraError('TESSERA_CONFIG_INVALID', `${what} unix:PATH needs an absolute path, e.g. unix:/run/tessera/orders.sock`);
  return { listen: unix !== undefined ? { path: unix } : parseHostPort(m[1], `${what} listen`), upstream: { ...upstream, expectedId: parseSpiffeId(m[3]!).id } };
}
