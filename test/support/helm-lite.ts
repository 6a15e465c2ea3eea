/**
 * A deliberately small renderer for the subset of Helm (Go text/template) that the chart under
 * deploy/helm/tessera/ uses, so the chart can be rendered and its output validated offline without
 * `helm`. Supported, and nothing else (anything else throws, so the chart cannot drift out of the
 * subset unnoticed):
 *   {{ .Values.a.b }}  {{ .Release.Namespace }}  {{ .Release.Name }}  {{ .Chart.AppVersion }}  {{ . }}
 *   {{ X | quote }}    {{ join "SEP" .Values.list }}
 *   {{ if X }} ... {{ end }}   {{ range X }} ... {{ end }}   trim markers {{- and -}}
 * A missing value throws (Helm would print "<no value>"). It is not Helm: what Helm adds (Sprig,
 * include/define, lookup, schema checks) is neither rendered nor checked here.
 */
interface Ctx { Values: unknown; Release: { Name: string; Namespace: string }; Chart: Record<string, unknown> }
type Node = { t: 'text'; s: string } | { t: 'out'; e: string } | { t: 'if' | 'range'; e: string; body: Node[] };

function parse(src: string): Node[] {
  const root: Node[] = [];
  const stack: { body: Node[] }[] = [{ body: root }];
  const re = /\{\{(-)?\s*(.*?)\s*(-)?\}\}/gs;
  let last = 0;
  let trimNext = false;
  for (let m = re.exec(src); m; m = re.exec(src)) {
    let text = src.slice(last, m.index);
    if (trimNext) text = text.replace(/^\s+/, '');
    if (m[1]) text = text.replace(/\s+$/, '');
    if (text) stack[stack.length - 1]!.body.push({ t: 'text', s: text });
    trimNext = m[3] === '-';
    last = m.index + m[0].length;
    const action = m[2]!;
    const kw = /^(if|range)\s+(.+)$/.exec(action);
    if (kw) {
      const node = { t: kw[1] as 'if' | 'range', e: kw[2]!, body: [] as Node[] };
      stack[stack.length - 1]!.body.push(node);
      stack.push(node);
    } else if (action === 'end') {
      if (stack.length === 1) throw new Error('helm-lite: {{ end }} without a block');
      stack.pop();
    } else if (/^(else|with|define|include|template|block)\b/.test(action)) {
      throw new Error(`helm-lite: unsupported action {{ ${action} }}`);
    } else {
      stack[stack.length - 1]!.body.push({ t: 'out', e: action });
    }
  }
  let tail = src.slice(last);
  if (trimNext) tail = tail.replace(/^\s+/, '');
  if (tail) root.push({ t: 'text', s: tail });
  if (stack.length !== 1) throw new Error('helm-lite: unclosed block');
  return root;
}

function lookup(path: string, ctx: Ctx, dot: unknown): unknown {
  if (path === '.') return dot;
  if (!/^(\.[A-Za-z_][A-Za-z0-9_]*)+$/.test(path)) throw new Error(`helm-lite: unsupported expression ${path}`);
  let v: unknown = ctx;
  for (const k of path.slice(1).split('.')) {
    if (typeof v !== 'object' || v === null || !(k in v)) throw new Error(`helm-lite: no value at ${path}`);
    v = (v as Record<string, unknown>)[k];
  }
  return v;
}

function evaluate(expr: string, ctx: Ctx, dot: unknown): unknown {
  const [head, ...fns] = expr.split('|').map((s) => s.trim());
  const join = /^join\s+"([^"]*)"\s+(\S+)$/.exec(head!);
  let v: unknown;
  if (join) {
    const list = lookup(join[2]!, ctx, dot);
    if (!Array.isArray(list)) throw new Error(`helm-lite: join needs a list at ${join[2]}`);
    v = list.map(String).join(join[1]!);
  } else {
    v = lookup(head!, ctx, dot);
  }
  for (const fn of fns) {
    if (fn !== 'quote') throw new Error(`helm-lite: unsupported function ${fn}`);
    v = JSON.stringify(String(v));
  }
  return v;
}

const truthy = (v: unknown): boolean => !(v === undefined || v === null || v === false || v === 0 || v === '' || (Array.isArray(v) && v.length === 0));

function render(nodes: Node[], ctx: Ctx, dot: unknown): string {
  let out = '';
  for (const n of nodes) {
    if (n.t === 'text') out += n.s;
    else if (n.t === 'out') {
      const v = evaluate(n.e, ctx, dot);
      if (typeof v === 'object' && v !== null) throw new Error(`helm-lite: {{ ${n.e} }} is not a scalar`);
      out += String(v);
    } else if (n.t === 'if') {
      if (truthy(evaluate(n.e, ctx, dot))) out += render(n.body, ctx, dot);
    } else {
      const list = evaluate(n.e, ctx, dot);
      if (!Array.isArray(list)) throw new Error(`helm-lite: range needs a list at ${n.e}`);
      for (const item of list) out += render(n.body, ctx, item);
    }
  }
  return out;
}

export function renderTemplate(src: string, ctx: Ctx): string {
  return render(parse(src), ctx, ctx);
}
