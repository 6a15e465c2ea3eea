import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { TesseraError } from '../errors.js';
import { MAX_TELEMETRY_LINE_BYTES, parseTelemetryLine, readTelemetry, validateTelemetryWindow } from './telemetry.js';
import type { TelemetryWindow } from './types.js';

const valid: TelemetryWindow = {
  ts: '2026-12-03T10:00:05.000Z', window_s: 5, caller: 'spiffe://tessera.test/shop/web', callee: 'spiffe://tessera.test/shop/orders',
  caller_site: 'eu-1', callee_site: 'us_east.2', reporter: 'caller', action: 'http', requests: 10, errors: 1, denials: 2,
  bytes_in: 1000, bytes_out: 200, latency_p50_ms: 3.5, latency_p99_ms: 20, paths_distinct: 3, first_seen: false,
};

function refusal(fn: () => unknown): TesseraError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(TesseraError);
    expect((err as TesseraError).code).toBe('TESSERA_TELEMETRY_INVALID');
    return err as TesseraError;
  }
  throw new Error('expected a refusal');
}

describe('parseTelemetryLine', () => {
  it('accepts a valid line and returns only the known fields', () => {
    expect(parseTelemetryLine(JSON.stringify(valid), 1)).toEqual(valid);
    const { action, first_seen, ...bare } = valid;
    void action; void first_seen;
    expect(parseTelemetryLine(JSON.stringify(bare))).toEqual(bare);
    expect(parseTelemetryLine(JSON.stringify({ ...bare, ts: '2026-12-03T10:00:05Z' })).ts).toBe('2026-12-03T10:00:05Z');
  });

  it.each([
    ['ts', '2026-12-03T10:00:05+01:00'], ['ts', '2026-02-30T10:00:00Z'], ['ts', '2026-12-03 10:00:05Z'], ['ts', 1795996800000], ['ts', '2026-12-03T24:00:00Z'],
    ['window_s', 0], ['window_s', 3601], ['window_s', 2.5], ['window_s', '5'],
    ['caller', 'spiffe://Tessera.test/web'], ['caller', 'https://tessera.test/web'], ['callee', ''], ['callee', null],
    ['caller_site', ''], ['caller_site', 'eu 1'], ['callee_site', 'x'.repeat(65)],
    ['reporter', 'both'], ['action', 'udp'], ['caller_site', '.eu'], ['latency_p99_ms', 3_600_001],
    ['requests', -1], ['requests', 1.5], ['requests', 2 ** 53], ['bytes_out', '10'], ['bytes_in', null],
    ['denials', 11], ['paths_distinct', 11],
    ['latency_p50_ms', -0.1], ['latency_p99_ms', 'fast'], ['latency_p50_ms', 21], ['first_seen', 'yes'],
  ])('refuses %s = %j, naming the line and field', (field, value) => {
    const e = refusal(() => parseTelemetryLine(JSON.stringify({ ...valid, [field]: value }), 7));
    expect(e.message).toContain('telemetry line 7');
    expect(e.message).toContain(`"${field}"`);
  });

  it('refuses missing fields, unknown fields, non-objects, bad JSON and over-long lines', () => {
    const { bytes_out, ...missing } = valid;
    void bytes_out;
    expect(refusal(() => parseTelemetryLine(JSON.stringify(missing), 3)).message).toContain('"bytes_out"');
    expect(refusal(() => parseTelemetryLine(JSON.stringify({ ...valid, byte_out: 1 }), 3)).message).toContain('"byte_out"');
    expect(refusal(() => parseTelemetryLine('{"__proto__":{"x":1}}')).message).toContain('__proto__');
    for (const line of ['[]', 'null', '42', '"x"', '{', '']) refusal(() => parseTelemetryLine(line, 2));
    refusal(() => parseTelemetryLine(' '.repeat(MAX_TELEMETRY_LINE_BYTES + 1)));
    refusal(() => parseTelemetryLine('é'.repeat(MAX_TELEMETRY_LINE_BYTES / 2 + 1)));
  });

  it('takes errors above requests (a failure is counted in the window it happens) and unseals reported by the key server only', () => {
    expect(parseTelemetryLine(JSON.stringify({ ...valid, requests: 0, errors: 3, denials: 0, paths_distinct: 0 })).errors).toBe(3);
    expect(parseTelemetryLine(JSON.stringify({ ...valid, action: 'unseal', reporter: 'callee' })).action).toBe('unseal');
    expect(refusal(() => parseTelemetryLine(JSON.stringify({ ...valid, action: 'unseal', reporter: 'caller' }), 4)).message).toMatch(/telemetry line 4: field "reporter"/);
    expect(refusal(() => validateTelemetryWindow({ ...valid, denials: 11 }, { window: 2 })).message).toMatch(/^window 2: field "denials"/);
  });

  it('validateTelemetryWindow takes parsed objects and returns a copy', () => {
    const copy = validateTelemetryWindow({ ...valid });
    expect(copy).toEqual(valid);
    refusal(() => validateTelemetryWindow(undefined));
    refusal(() => validateTelemetryWindow([valid]));
  });
});

const segment = fc.stringMatching(/^[A-Za-z0-9_-][A-Za-z0-9._-]{0,11}$/);
const arbWindow: fc.Arbitrary<TelemetryWindow> = fc.record({
  t: fc.integer({ min: 0, max: Date.UTC(9999, 0, 1) }), window_s: fc.integer({ min: 1, max: 3600 }),
  callerPath: fc.array(segment, { minLength: 1, maxLength: 3 }), calleePath: fc.array(segment, { minLength: 1, maxLength: 3 }),
  caller_site: fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/), callee_site: fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/),
  reporter: fc.constantFrom('caller' as const, 'callee' as const), action: fc.option(fc.constantFrom('http', 'tcp', 'unseal'), { nil: undefined }),
  requests: fc.maxSafeNat(), frac: fc.tuple(fc.double({ min: 0, max: 1, noNaN: true }), fc.double({ min: 0, max: 1, noNaN: true }), fc.double({ min: 0, max: 1, noNaN: true })),
  bytes_in: fc.maxSafeNat(), bytes_out: fc.maxSafeNat(), lat: fc.tuple(fc.double({ min: 0, max: 3_600_000, noNaN: true }), fc.double({ min: 0, max: 3_600_000, noNaN: true })),
  first_seen: fc.option(fc.boolean(), { nil: undefined }),
}).map((r) => {
  const sub = (f: number): number => Math.floor(r.requests * f);
  const w: TelemetryWindow = {
    ts: new Date(r.t).toISOString(), window_s: r.window_s, caller: `spiffe://tessera.test/${r.callerPath.join('/')}`, callee: `spiffe://other.test/${r.calleePath.join('/')}`,
    caller_site: r.caller_site, callee_site: r.callee_site, reporter: r.action === 'unseal' ? 'callee' : r.reporter, requests: r.requests, errors: sub(r.frac[0]), denials: sub(r.frac[1]),
    bytes_in: r.bytes_in, bytes_out: r.bytes_out, latency_p50_ms: Math.min(...r.lat), latency_p99_ms: Math.max(...r.lat), paths_distinct: sub(r.frac[2]),
  };
  if (r.action !== undefined) w.action = r.action;
  if (r.first_seen !== undefined) w.first_seen = r.first_seen;
  return w;
}).filter((w) => !w.caller.split('/').slice(3).some((s) => s === '.' || s === '..') && !w.callee.split('/').slice(3).some((s) => s === '.' || s === '..'));

describe('telemetry properties (fast-check)', () => {
  it('every valid record round-trips through JSON', () => {
    fc.assert(fc.property(arbWindow, (w) => {
      expect(parseTelemetryLine(JSON.stringify(w), 1)).toEqual(w);
    }), { numRuns: 500 });
  });

  it('arbitrary strings and mutated records throw nothing but TESSERA_TELEMETRY_INVALID', () => {
    const check = (line: string): void => {
      try {
        parseTelemetryLine(line, 1);
      } catch (err) {
        expect(err).toBeInstanceOf(TesseraError);
        expect((err as TesseraError).code).toBe('TESSERA_TELEMETRY_INVALID');
      }
    };
    fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 300 }), check), { numRuns: 1000 });
    fc.assert(fc.property(arbWindow, fc.constantFrom(...Object.keys(valid)), fc.jsonValue(), (w, k, v) => check(JSON.stringify({ ...w, [k]: v }))), { numRuns: 1000 });
  });
});

describe('readTelemetry', () => {
  const line = JSON.stringify(valid);

  async function collect(chunks: (string | Uint8Array)[]): Promise<number[]> {
    const out: number[] = [];
    for await (const { lineNo } of readTelemetry(chunks)) out.push(lineNo);
    return out;
  }

  it('splits lines across chunks, skips blank lines, takes CRLF and a last line without newline', async () => {
    const text = `${line}\r\n\n   \n${line}\n${line}`;
    const bytes = Buffer.from(text);
    const chunks = [bytes.subarray(0, 7), bytes.subarray(7, 300), bytes.subarray(300)];
    expect(await collect(chunks)).toEqual([1, 4, 5]);
    expect(await collect([text])).toEqual([1, 4, 5]);
  });

  it('names the bad line, refuses invalid UTF-8 and lines over the cap without buffering them whole', async () => {
    await expect(collect([`${line}\n${line}\n{"ts":1}\n`])).rejects.toThrow(/telemetry line 3/);
    await expect(collect([Buffer.from([0x7b, 0xff, 0x7d, 0x0a])])).rejects.toThrow(/line 1: is not valid UTF-8/);
    const big = Buffer.alloc(16 * 1024, 0x20);
    const endless = function* () { yield `${line}\n`; for (let i = 0; i < 100; i++) yield big; };
    await expect(collect([...endless()])).rejects.toThrow(/telemetry line 2: longer than 65536 bytes/);
  });
});
