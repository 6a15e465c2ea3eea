import { useEffect, useState } from 'preact/hooks';
import { ApiError, api } from '../api.js';
import { Failure } from './need-sign-in.js';

type Row = Record<string, unknown>;

export interface TableSpec {
  /** The admin API read that fills the page. */
  path: string;
  /** Where the rows are in the answer. */
  list: (body: unknown) => Row[];
  columns: { title: string; value: (r: Row) => unknown }[];
  caption: string;
}

const field = (name: string) => (r: Row): unknown => r[name];
const pick = (name: string) => (b: unknown): Row[] => ((b as Record<string, unknown> | undefined)?.[name] as Row[] | undefined) ?? [];

/** The read-only pages of this round: each shows one admin API list. Actions come with sign-in. */
export const PAGES: Record<string, TableSpec> = {
  identities: {
    path: '/v1/entries', list: pick('entries'), caption: 'Registration entries',
    columns: [{ title: 'SPIFFE ID', value: field('spiffe_id') }, { title: 'Site', value: (r) => (r.attributes as Row | undefined)?.site }, { title: 'Revoked', value: (r) => (r.revoked_at ? 'yes' : 'no') }],
  },
  policies: {
    path: '/v1/policies', list: pick('versions'), caption: 'Policy versions',
    columns: [{ title: 'Version', value: field('version') }, { title: 'Author', value: field('author') }, { title: 'Reason', value: field('reason') }, { title: 'Created', value: field('createdAt') }],
  },
  risk: {
    path: '/v1/risk', list: pick('identities'), caption: 'Risk states',
    columns: [{ title: 'Identity', value: field('spiffe_id') }, { title: 'State', value: field('state') }, { title: 'Score', value: field('score') }, { title: 'Until', value: field('until') }],
  },
  grants: {
    path: '/v1/grants', list: pick('grants'), caption: 'Just-in-time grants',
    columns: [{ title: 'Id', value: field('id') }, { title: 'State', value: field('state') }, { title: 'Principal', value: field('principal') }, { title: 'Requested by', value: field('requested_by') }],
  },
  audit: {
    path: '/v1/audit?limit=50', list: pick('records'), caption: 'Newest audit records',
    columns: [{ title: 'Id', value: field('id') }, { title: 'Action', value: field('action') }, { title: 'Actor', value: field('actor') }, { title: 'Outcome', value: field('outcome') }],
  },
  secrets: {
    path: '/v1/secret-policies', list: pick('policies'), caption: 'Secret policies',
    columns: [{ title: 'Id', value: field('id') }, { title: 'Epoch', value: field('epoch') }, { title: 'Generation', value: field('generation') }, { title: 'Retired', value: field('retired_at') }],
  },
};

function text(v: unknown): string {
  if (v === undefined || v === null) return '';
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

export function TablePage({ spec }: { spec: TableSpec }) {
  const [rows, setRows] = useState<Row[] | undefined>();
  const [error, setError] = useState<ApiError | undefined>();
  useEffect(() => {
    let live = true;
    api.get<unknown>(spec.path).then((b) => live && setRows(spec.list(b)), (e: unknown) => live && setError(e instanceof ApiError ? e : new ApiError(0, 'TESSERA_INTERNAL', String(e))));
    return () => {
      live = false;
    };
  }, [spec]);
  if (error) return <Failure error={error} />;
  if (!rows) return <p role="status">Loading…</p>;
  return (
    <table>
      <caption>{spec.caption} ({rows.length})</caption>
      <thead><tr>{spec.columns.map((c) => <th key={c.title} scope="col">{c.title}</th>)}</tr></thead>
      <tbody>
        {rows.map((r, i) => <tr key={i}>{spec.columns.map((c) => <td key={c.title}>{text(c.value(r))}</td>)}</tr>)}
      </tbody>
    </table>
  );
}
