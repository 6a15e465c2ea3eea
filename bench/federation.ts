/**
 * What per-trust-domain anchoring (issue 14) adds to each full handshake a sidecar accepts once it
 * holds federated bundles: the SVID leaf check alone (baseline, what every handshake pays without
 * federation), the same plus the anchoring for a peer seen before (memo: a hash) and for a new
 * certificate each time (5,000 distinct leaves cycled, more than the memo holds: parse + signature
 * check), and the limit: one ECDSA P-256 signature verification (X509Certificate.verify), which a new
 * certificate cannot go below. Resumed sessions pay nothing of this (tickets are sealed per bundle).
 *
 *   npm run build && node dist/bench/federation.js [--seconds S] [--json]
 */
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { TrustAnchors, judgeFederatedPeer } from '../src/core/federation-trust.js';
import { CertificateIssuer, createSelfSignedCa, pemEncode } from '../src/core/x509.js';
import { verifyPeerSvid } from '../src/core/x509-svid.js';
import { formatRateRows, measureRate, parseBenchArgs } from './args.js';

const args = parseBenchArgs(process.argv.slice(2), 'federation', 5);
const HOUR = 3600_000;

function ca(td: string): { pem: string; issue(uri: string): Buffer; cert: X509Certificate } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const now = Date.now();
  const der = createSelfSignedCa({ privateKey, publicKey, commonName: `${td} ca`, trustDomainUri: `spiffe://${td}`, notBefore: new Date(now - HOUR), notAfter: new Date(now + HOUR) });
  const issuer = new CertificateIssuer({ certDer: der, privateKey });
  return {
    pem: pemEncode(der, 'CERTIFICATE'), cert: new X509Certificate(der),
    issue: (uri) => issuer.issueLeaf({ publicKey: generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey, uriSans: [uri], notBefore: new Date(now - 60_000), notAfter: new Date(now + HOUR) }),
  };
}

const me = ca('me.example');
const partner = ca('partner.example');
const trust = new TrustAnchors('me.example', me.pem, new Map([['partner.example', partner.pem]]));
const ours = me.issue('spiffe://me.example/web');
const theirs = partner.issue('spiffe://partner.example/client');
const oursCert = new X509Certificate(ours);
// More distinct partner leaves than the memo keeps (4,096): every check is a miss.
const fresh = Array.from({ length: 5000 }, (_, i) => partner.issue(`spiffe://partner.example/client-${i}`));
const expect = { trustDomain: 'me.example' };

const judge = (peer: Buffer | X509Certificate): boolean => {
  const now = Date.now();
  const der = Buffer.isBuffer(peer) ? peer : peer.raw;
  return judgeFederatedPeer(trust, 'me.example', verifyPeerSvid(der, true, expect, now), peer, true, now).ok;
};
if (!judge(ours) || !judge(theirs) || verifyPeerSvid(ours, true, expect, Date.now()).ok !== true) throw new Error('bench setup: a genuine peer was refused');

const rows = [
  measureRate('baseline: SVID leaf check (no federation)', args.seconds, () => verifyPeerSvid(ours, true, expect, Date.now()), { batch: 64 }),
  measureRate('federated: + anchoring, our peer seen before', args.seconds, () => judge(ours), { batch: 64 }),
  measureRate('federated: + anchoring, partner peer seen before', args.seconds, () => judge(theirs), { batch: 64 }),
  measureRate('federated: + anchoring, new partner certificate (outbound, DER)', args.seconds, (i) => judge(fresh[i % fresh.length]!), { batch: 8 }),
  measureRate('limit: one ECDSA P-256 verify', args.seconds, () => oursCert.verify(me.cert.publicKey), { batch: 8 }),
];
if (args.json) process.stdout.write(`${JSON.stringify(rows)}\n`);
else process.stdout.write(formatRateRows(rows, 'per accepted full handshake', 'µs/op'));
