/**
 * The text formats of the fs store's small files (see `fs.ts` for the layout): the pointer (a generation's
 * JSON sidecar), the frontier line, the block map's header and records. Parsers answer `undefined` for
 * anything torn or foreign, never throw.
 */
import { type BlockMapHeader, type BlockRecord, type PartialMeta, parseStoredEncryption } from './store.js';

/** A generation id: 16 lower-case hex digits. */
export const GENERATION = /^[0-9a-f]{16}$/;
const FRONTIER_LINE = /^(\S+) (\d{16}) (\d{16})\n$/;

/**
 * The frontier line of generation `fileId`: `{fileId} {n} {n}\n`, `n` as 16 decimal digits, twice, because a
 * read racing the rewrite in place may see a mix of old and new bytes.
 */
export function formatFrontier(fileId: string, frontier: number): Buffer {
  const n = String(frontier).padStart(16, '0');
  return Buffer.from(`${fileId} ${n} ${n}\n`);
}

/**
 * The frontier the frontier file of generation `fileId` states, or `undefined` when it is torn or another's.
 * It holds the frontier line, or at the end the identity record of that generation, which the commit writes
 * over it before renaming it (see `FsRecordingStore.commit`): every byte is written and flushed then, so the
 * record states the whole size. A reader (a follower, a holder taking over after a crash) that finds the
 * record therefore knows the download complete.
 */
export function parseFrontier(text: string, fileId: string): number | undefined {
  const match = FRONTIER_LINE.exec(text);
  if (match !== null) return match[1] === fileId && match[2] === match[3] ? Number(match[2]) : undefined;
  if (!text.startsWith('{')) return undefined;
  const record = parseJsonObject(text);
  const size = record?.size;
  if (
    record?.v !== 1 ||
    record.generation !== fileId ||
    !Number.isSafeInteger(size) ||
    (size as number) < 0
  ) {
    return undefined;
  }
  return size as number;
}

export function sameHeader(a: BlockMapHeader, b: BlockMapHeader): boolean {
  return a.fileId === b.fileId && a.size === b.size && a.etag === b.etag && a.lastModified === b.lastModified;
}

export function parseBlockHeader(line: string): BlockMapHeader | undefined {
  const h = parseJsonObject(line);
  if (h === undefined) return undefined;
  if (
    h.v !== 1 ||
    typeof h.fileId !== 'string' ||
    !Number.isSafeInteger(h.size) ||
    typeof h.etag !== 'string' ||
    !nullableString(h.lastModified)
  ) {
    return undefined;
  }
  return {
    fileId: h.fileId,
    size: h.size as number,
    etag: h.etag,
    lastModified: h.lastModified as string | null,
  };
}

export function parseBlockRecord(line: string): BlockRecord | undefined {
  const r = parseJsonObject(line);
  if (r === undefined) return undefined;
  const range =
    Number.isSafeInteger(r.start) && Number.isSafeInteger(r.end) && (r.start as number) < (r.end as number);
  if (r.t === 'claim' && range && typeof r.token === 'string') {
    return { t: 'claim', token: r.token, start: r.start as number, end: r.end as number };
  }
  if (r.t === 'have' && range) return { t: 'have', start: r.start as number, end: r.end as number };
  if (r.t === 'off' && typeof r.reason === 'string') return { t: 'off', reason: r.reason };
  return undefined;
}

export function parseMeta(text: string): PartialMeta | undefined {
  const m = parseJsonObject(text);
  if (m === undefined) return undefined;
  if (
    typeof m.recordingSid !== 'string' ||
    !(m.size === null || (Number.isSafeInteger(m.size) && (m.size as number) >= 0)) ||
    !nullableString(m.etag) ||
    !nullableString(m.lastModified) ||
    typeof m.acceptsRanges !== 'boolean' ||
    typeof m.startedAt !== 'string' ||
    typeof m.fileId !== 'string' ||
    !GENERATION.test(m.fileId) ||
    typeof m.bootId !== 'string'
  ) {
    return undefined;
  }
  const encryption = parseStoredEncryption(m.encryption);
  // A pointer that says the bytes are ciphertext but not how to open them is torn or foreign.
  if (m.encryption !== undefined && encryption === undefined) return undefined;
  return m as unknown as PartialMeta;
}

export function nullableString(value: unknown): boolean {
  return value === null || typeof value === 'string';
}

/** A JSON object, or `undefined` for anything else (torn writes and foreign files included). */
export function parseJsonObject(text: string): Record<string, unknown> | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  return typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : undefined;
}
