import https from 'node:https';
import type { FetchImplementation } from 'jose';

/**
 * A jose `customFetch` on node:https trusting `ca` (Node 20's global fetch cannot take a custom CA
 * without undici's dispatcher). Does not follow redirects.
 */
export function httpsFetchTrusting(ca: string | Buffer, maxBytes = 1 << 20): FetchImplementation {
  return (url, init) =>
    new Promise<Response>((resolve, reject) => {
      const headers: Record<string, string> = {};
      init.headers.forEach((value, name) => {
        headers[name] = value;
      });
      const req = https.request(url, { method: init.method, headers, ca, signal: init.signal, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > maxBytes) req.destroy(new Error('response too large'));
          else chunks.push(chunk);
        });
        res.on('error', reject);
        res.on('end', () => {
          try {
            const h = new Headers();
            for (const [name, value] of Object.entries(res.headers)) {
              if (value === undefined) continue;
              for (const v of Array.isArray(value) ? value : [value]) h.append(name, v);
            }
            resolve(new Response(Buffer.concat(chunks), { status: res.statusCode ?? 502, headers: h }));
          } catch (e) {
            reject(e);
          }
        });
      });
      req.on('error', reject);
      req.end();
    });
}
