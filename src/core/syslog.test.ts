import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isTesseraError } from './errors.js';
import {
  escapeSdParam, formatSdElement, formatSyslog5424, frameOctetCounted, OctetCountedDecoder, parseSiemUrl, parseStructuredData, unescapeSdParam,
} from './syslog.js';

const codeOf = (fn: () => unknown): string => {
  try {
    fn();
    return 'no error';
  } catch (err) {
    return isTesseraError(err) ? err.code : `untyped: ${String(err)}`;
  }
};

describe('parseSiemUrl', () => {
  it('takes syslog+tls and syslog+tcp with a DNS name, IPv4 or bracketed IPv6 host', () => {
    expect(parseSiemUrl('syslog+tls://siem.example.org:6514')).toEqual({ transport: 'tls', host: 'siem.example.org', port: 6514 });
    expect(parseSiemUrl('syslog+tcp://127.0.0.1:514')).toEqual({ transport: 'tcp', host: '127.0.0.1', port: 514 });
    expect(parseSiemUrl('syslog+tls://[::1]:6514')).toEqual({ transport: 'tls', host: '::1', port: 6514 });
    expect(parseSiemUrl('syslog+tls://localhost:65535').port).toBe(65535);
  });

  it('refuses anything else with TESSERA_CONFIG_INVALID', () => {
    for (const bad of [
      '', 'syslog://h:514', 'syslog+udp://h:514', 'SYSLOG+TLS://h:514', 'syslog+tls://h', 'syslog+tls://h:', 'syslog+tls://h:0', 'syslog+tls://h:65536',
      'syslog+tls://h:0514', 'syslog+tls://h:514/', 'syslog+tls://h:514?x=1', 'syslog+tls://u@h:514', 'syslog+tls://:514', 'syslog+tls://[::1:514',
      'syslog+tls://[zz]:514', 'syslog+tls://[127.0.0.1]:514', 'syslog+tls://-h:514', 'syslog+tls://h_1:514', 'syslog+tls://a..b:514', 'syslog+tls://999.1.1.1:514',
      'syslog+tls://h :514', ' syslog+tls://h:514', 'syslog+tls://h:514\n', `syslog+tls://${'a'.repeat(64)}:514`, 'syslog+tls://1.2.3:514',
    ]) {
      expect(`${JSON.stringify(bad)}: ${codeOf(() => parseSiemUrl(bad))}`).toBe(`${JSON.stringify(bad)}: TESSERA_CONFIG_INVALID`);
    }
  });

  it('never throws anything but TESSERA_CONFIG_INVALID, and accepts only what it can print back', () => {
    fc.assert(fc.property(fc.oneof(fc.string(), fc.string().map((s) => `syslog+tls://${s}`), fc.tuple(fc.domain(), fc.integer({ min: -1, max: 70000 })).map(([h, p]) => `syslog+tcp://${h}:${p}`)), (text) => {
      let t;
      try {
        t = parseSiemUrl(text);
      } catch (err) {
        expect(isTesseraError(err) && err.code).toBe('TESSERA_CONFIG_INVALID');
        return;
      }
      expect(`syslog+${t.transport}://${t.host.includes(':') ? `[${t.host}]` : t.host}:${t.port}`).toBe(text);
    }), { numRuns: 2000 });
  });
});

describe('SD-PARAM escaping (RFC 5424 §6.3.3)', () => {
  it('escapes exactly ", \\ and ]', () => {
    expect(escapeSdParam('a"b\\c]d[e=f')).toBe('a\\"b\\\\c\\]d[e=f');
    expect(unescapeSdParam('a\\"b\\\\c\\]d')).toBe('a"b\\c]d');
    // A backslash before another character stays as it is.
    expect(unescapeSdParam('a\\nb')).toBe('a\\nb');
  });

  it('round-trips any string', () => {
    fc.assert(fc.property(fc.string({ unit: 'binary' }), (s) => {
      expect(unescapeSdParam(escapeSdParam(s))).toBe(s);
      // An escaped value has no unescaped " or ]: it cannot end its SD-PARAM or element early.
      expect(/(^|[^\\])(\\\\)*["\]]/.test(escapeSdParam(s))).toBe(false);
    }), { numRuns: 2000 });
  });

  it('formats elements that parse back to the same names and values, with what follows kept', () => {
    const name = fc.stringMatching(/^[a-z_][a-z0-9_.-]{0,20}$/);
    fc.assert(fc.property(fc.array(fc.tuple(name, fc.string({ unit: 'binary' })), { maxLength: 6 }), fc.string(), (params, tail) => {
      const el = formatSdElement('tessera@32473', params);
      const parsed = parseStructuredData(`${el} ${tail}`);
      expect(parsed.elements).toEqual([{ id: 'tessera@32473', params }]);
      expect(parsed.rest).toBe(` ${tail}`);
    }), { numRuns: 1000 });
  });

  it('refuses bad names and malformed structured data', () => {
    for (const id of ['', 'a b', 'a=b', 'a]', 'a"b', 'x'.repeat(33)]) expect(codeOf(() => formatSdElement(id, []))).toBe('TESSERA_CONFIG_INVALID');
    expect(codeOf(() => formatSdElement('ok@1', [['b@d', 'v']]))).toBe('TESSERA_CONFIG_INVALID');
    for (const bad of ['', '[', '[a', '[a b]', '[a b=1]', '[a b="1]', '[a b="x]y"]', '[a b="1"', 'x', '[ a]']) {
      expect(`${bad}: ${codeOf(() => parseStructuredData(bad))}`).toBe(`${bad}: TESSERA_BAD_REQUEST`);
    }
    expect(parseStructuredData('- msg')).toEqual({ elements: [], rest: ' msg' });
  });
});

describe('RFC 5424 messages and octet counting', () => {
  it('writes the header fields in order, NILVALUE for empty ones, printable ASCII only', () => {
    const msg = formatSyslog5424({ ts: Date.UTC(2026, 0, 2, 3, 4, 5, 678), hostname: 'host 1', procid: 42, msgid: '', severity: 6, structuredData: '[x@1 a="b"]', msg: '{"k":1}' });
    expect(msg).toBe('<110>1 2026-01-02T03:04:05.678Z host1 tessera 42 - [x@1 a="b"] {"k":1}');
    const long = formatSyslog5424({ ts: 0, hostname: '', procid: 1, msgid: 'm'.repeat(40), severity: 5, structuredData: '-', msg: '' });
    expect(long.split(' ')[2]).toBe('-');
    expect(long.split(' ')[5]).toBe('m'.repeat(32));
    expect(long.startsWith('<109>1 ')).toBe(true);
  });

  it('frames and splits back any messages, however the stream is cut', () => {
    fc.assert(fc.property(fc.array(fc.string({ unit: 'binary', minLength: 1 }), { minLength: 1, maxLength: 8 }), fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1 }), (msgs, cuts) => {
      const wire = Buffer.concat(msgs.map(frameOctetCounted));
      const dec = new OctetCountedDecoder();
      const out: string[] = [];
      let at = 0;
      for (let i = 0; at < wire.length; i++) {
        const n = cuts[i % cuts.length]!;
        out.push(...dec.push(wire.subarray(at, at + n)).map((b) => b.toString('utf8')));
        at += n;
      }
      expect(out).toEqual(msgs);
      expect(dec.pending).toBe(0);
    }), { numRuns: 500 });
  });

  it('counts octets, not characters', () => {
    expect(frameOctetCounted('é').toString('utf8')).toBe('2 é');
  });

  it('refuses a malformed or oversized length', () => {
    for (const bad of ['0 ', '01 x', 'x 1', ' 1 a', '-1 a', '12345678901', '1a a']) {
      expect(`${bad}: ${codeOf(() => new OctetCountedDecoder().push(Buffer.from(bad)))}`).toBe(`${bad}: TESSERA_BAD_REQUEST`);
    }
    expect(codeOf(() => new OctetCountedDecoder(10).push(Buffer.from('11 ')))).toBe('TESSERA_BAD_REQUEST');
    expect(new OctetCountedDecoder().push(Buffer.from('12'))).toEqual([]);
  });
});
