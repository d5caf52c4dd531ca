/**
 * A strict reader for the subset of YAML that recgate's compose file and Kubernetes manifests are written
 * in, so that the deploy checks read those files as a tool would without a YAML dependency: block mappings
 * and sequences (a sequence may sit at its key's indentation, as kubectl writes it), plain, single- and
 * double-quoted scalars, flow sequences of scalars, `{}`, comments and `---` between documents. Anything
 * else (anchors, aliases, tags, block scalars, flow mappings, tabs) is an error naming the line, so a file
 * that strays from the subset fails its check instead of being read wrongly.
 */

export type Yaml = string | number | boolean | null | Yaml[] | { [key: string]: Yaml };

interface Line {
  indent: number;
  text: string;
  no: number;
}

class YamlError extends Error {
  override name = 'YamlError';
}

function fail(line: { no: number }, message: string): never {
  throw new YamlError(`line ${line.no}: ${message}`);
}

/** Every document of `source`, in order. */
export function parseYamlDocuments(source: string): Yaml[] {
  const documents: Line[][] = [[]];
  source.split('\n').forEach((raw, index) => {
    const no = index + 1;
    if (/^ *\t/.test(raw)) fail({ no }, 'tabs are not allowed for indentation');
    const text = stripComment(raw, no).replace(/\s+$/, '');
    if (text === '') return;
    if (text === '---') {
      documents.push([]);
      return;
    }
    const indent = text.length - text.trimStart().length;
    documents.at(-1)!.push({ indent, text: text.trimStart(), no });
  });
  return documents
    .filter((lines) => lines.length > 0)
    .map((lines) => {
      const [value, next] = parseBlock(lines, 0, lines[0]!.indent);
      if (next < lines.length) fail(lines[next]!, 'unexpected indentation');
      return value;
    });
}

/** The only document of `source`. */
export function parseYaml(source: string): Yaml {
  const documents = parseYamlDocuments(source);
  if (documents.length !== 1) throw new YamlError(`expected one document, found ${documents.length}`);
  return documents[0]!;
}

function stripComment(raw: string, no: number): string {
  let quote: string | undefined;
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!;
    if (quote) {
      if (c === '\\' && quote === '"') i++;
      else if (c === quote) quote = undefined;
    } else if (c === '"' || c === "'") {
      if (i === 0 || /[\s:[,-]/.test(raw[i - 1]!)) quote = c;
    } else if (c === '#' && (i === 0 || /\s/.test(raw[i - 1]!))) {
      return raw.slice(0, i);
    }
  }
  if (quote) fail({ no }, 'unterminated quoted string');
  return raw;
}

const isSeqItem = (line: Line) => line.text === '-' || line.text.startsWith('- ');

function parseBlock(lines: Line[], i: number, indent: number): [Yaml, number] {
  const line = lines[i]!;
  if (line.indent !== indent) fail(line, 'unexpected indentation');
  return isSeqItem(line) ? parseSeq(lines, i, indent) : parseMap(lines, i, indent);
}

function parseSeq(lines: Line[], i: number, indent: number): [Yaml[], number] {
  const items: Yaml[] = [];
  while (i < lines.length && lines[i]!.indent === indent && isSeqItem(lines[i]!)) {
    const line = lines[i]!;
    const content = line.text.slice(1).trimStart();
    if (content === '') {
      const next = lines[i + 1];
      if (next === undefined || next.indent <= indent) {
        items.push(null);
        i++;
      } else {
        const [value, after] = parseBlock(lines, i + 1, next.indent);
        items.push(value);
        i = after;
      }
    } else if (isSeqItem({ ...line, text: content }) || keyOf(content) !== undefined) {
      // "- key: value" opens a mapping (or "- - x" a sequence) whose lines sit at the content's column.
      const column = indent + (line.text.length - content.length);
      lines[i] = { indent: column, text: content, no: line.no };
      const [value, after] = parseBlock(lines, i, column);
      items.push(value);
      i = after;
    } else {
      items.push(scalar(content, line));
      i++;
    }
  }
  return [items, i];
}

function keyOf(text: string): { key: string; rest: string } | undefined {
  const m =
    /^("(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^\s"'[\]{}&*!|>%@`#,-][^:]*?|-[^\s:][^:]*?)\s*:(?:\s+(.*))?$/.exec(
      text,
    );
  if (!m) return undefined;
  const raw = m[1]!;
  const key = raw.startsWith('"') || raw.startsWith("'") ? (scalar(raw, { no: 0 }) as string) : raw;
  return { key, rest: m[2] ?? '' };
}

function parseMap(lines: Line[], i: number, indent: number): [{ [key: string]: Yaml }, number] {
  const map: { [key: string]: Yaml } = {};
  while (i < lines.length && lines[i]!.indent === indent && !isSeqItem(lines[i]!)) {
    const line = lines[i]!;
    const entry = keyOf(line.text);
    if (entry === undefined) fail(line, `expected "key: value", found ${JSON.stringify(line.text)}`);
    if (Object.hasOwn(map, entry.key)) fail(line, `duplicate key ${JSON.stringify(entry.key)}`);
    if (entry.key === '<<') fail(line, 'merge keys are not supported');
    i++;
    if (entry.rest !== '') {
      map[entry.key] = scalar(entry.rest, line);
      continue;
    }
    const next = lines[i];
    if (next !== undefined && next.indent > indent) {
      [map[entry.key], i] = parseBlock(lines, i, next.indent);
    } else if (next !== undefined && next.indent === indent && isSeqItem(next)) {
      [map[entry.key], i] = parseSeq(lines, i, indent);
    } else {
      map[entry.key] = null;
    }
  }
  if (i < lines.length && lines[i]!.indent > indent) fail(lines[i]!, 'unexpected indentation');
  return [map, i];
}

function scalar(text: string, line: { no: number }): Yaml {
  if (text.startsWith('"')) {
    if (!/^"(?:[^"\\]|\\.)*"$/.test(text)) fail(line, `bad double-quoted string ${text}`);
    return JSON.parse(text) as string;
  }
  if (text.startsWith("'")) {
    if (!/^'(?:[^']|'')*'$/.test(text)) fail(line, `bad single-quoted string ${text}`);
    return text.slice(1, -1).replace(/''/g, "'");
  }
  if (text === '{}') return {};
  if (text.startsWith('[')) {
    if (!text.endsWith(']')) fail(line, `unterminated flow sequence ${text}`);
    const inner = text.slice(1, -1).trim();
    if (inner === '') return [];
    const parts = inner.match(/"(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^,]+/g) ?? [];
    const joined = parts.join(',').replace(/\s/g, '');
    if (joined.replace(/,/g, '') !== inner.replace(/[\s,]/g, '')) fail(line, `bad flow sequence ${text}`);
    return parts
      .map((p) => p.trim())
      .filter((p) => p !== '')
      .map((p) => scalar(p, line));
  }
  if (/^[&*!|>{@`%]/.test(text)) fail(line, `unsupported YAML syntax: ${text}`);
  if (/:\s/.test(text) || text.endsWith(':')) fail(line, `a plain scalar may not contain ": " (${text})`);
  if (text === 'true') return true;
  if (text === 'false') return false;
  if (text === 'null' || text === '~') return null;
  if (/^-?(?:0|[1-9]\d*)(?:\.\d+)?$/.test(text)) return Number(text);
  return text;
}
