/**
 * What the deploy checks read: the Dockerfile's facts (data dir, user, health check), recgate's own list of
 * environment variables (taken from its configuration code, not kept by hand), and a gateway's routes.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  type Config,
  configFromEnv,
  loadConfig,
  missingGatewaySetting,
  recordingsDir,
} from '../../src/config/config.js';
import { parseDatabaseUrl } from '../../src/config/database-url.js';
import { routeTableOf } from '../../src/http/route-table.js';
import { startStack } from '../helpers/stack.js';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export function readRepoFile(path: string): string {
  return readFileSync(`${ROOT}${path}`, 'utf8');
}

/**
 * Every environment variable recgate's configuration reads: `configFromEnv` run on an environment that
 * records each name asked for.
 */
export function recgateEnvNames(): Set<string> {
  const read = new Set<string>();
  const env = new Proxy({} as NodeJS.ProcessEnv, {
    get(_target, key) {
      if (typeof key === 'string') read.add(key);
      return undefined;
    },
  });
  configFromEnv(env);
  return read;
}

export interface DockerInstruction {
  keyword: string;
  args: string;
  stage: number;
}

/** The Dockerfile's instructions, continuation lines joined, each with the index of its build stage. */
export function dockerfileInstructions(text = readRepoFile('Dockerfile')): DockerInstruction[] {
  const joined = text
    .split('\n')
    .filter((line) => !/^\s*#/.test(line))
    .join('\n')
    .replace(/\\\n/g, ' ');
  const out: DockerInstruction[] = [];
  let stage = -1;
  for (const line of joined.split('\n')) {
    const m = /^\s*([A-Za-z]+)\s+(.*\S)\s*$/.exec(line);
    if (!m) continue;
    const keyword = m[1]!.toUpperCase();
    if (keyword === 'FROM') stage++;
    out.push({ keyword, args: m[2]!.replace(/\s+/g, ' '), stage });
  }
  return out;
}

export interface ImageFacts {
  /** ENV of the final stage. */
  env: Record<string, string>;
  /** VOLUME paths of the final stage. */
  volumes: string[];
  user: string;
  uid: number;
  dataDir: string;
  healthcheck: string[];
  entrypoint: string[];
}

/** The final image's settings as the Dockerfile declares them. */
export function imageFacts(): ImageFacts {
  const all = dockerfileInstructions();
  const last = Math.max(...all.map((i) => i.stage));
  const final = all.filter((i) => i.stage === last);
  const env: Record<string, string> = {};
  for (const i of final.filter((i) => i.keyword === 'ENV')) {
    for (const [, k, v] of i.args.matchAll(/([A-Z0-9_]+)=(\S+)/g)) env[k!] = v!;
  }
  const json = (keyword: string, strip: RegExp | string = ''): string[] => {
    const found = final.find((i) => i.keyword === keyword);
    assert.ok(found, `the final stage has ${keyword}`);
    const args = found.args.replace(strip, '').trim();
    assert.ok(args.startsWith('['), `${keyword} is in exec form (a JSON array): ${args}`);
    return JSON.parse(args) as string[];
  };
  const user = final.findLast((i) => i.keyword === 'USER')?.args ?? 'root';
  const uid = Number(
    /useradd\b.*--uid (\d+).* (\S+)(?: &&|$)/.exec(
      final.find((i) => /useradd/.test(i.args))?.args ?? '',
    )?.[1],
  );
  return {
    env,
    volumes: json('VOLUME'),
    user,
    uid,
    dataDir: env.RECGATE_DATA_DIR ?? '',
    healthcheck: json('HEALTHCHECK', /^.*?\bCMD\b/),
    entrypoint: json('ENTRYPOINT'),
  };
}

/**
 * The gateway's configuration for an environment as a deployment sets it (over the image's ENV), checked as
 * `recgate serve` checks it; fails the test naming `where` when a required setting is missing or bad.
 */
export function gatewayConfig(where: string, env: Record<string, string>): Config {
  const merged = { ...imageFacts().env, ...env };
  let config: Config;
  try {
    config = loadConfig({}, merged);
  } catch (err) {
    assert.fail(`${where}: recgate would refuse this configuration: ${(err as Error).message}`);
  }
  const missing = missingGatewaySetting(config);
  assert.equal(missing, undefined, `${where}: ${missing}`);
  return config;
}

export function databaseKindOf(config: Config): 'sqlite' | 'postgres' {
  return parseDatabaseUrl(config.databaseUrl, config.dataDir).kind;
}

export { lockBackendOf } from '../../src/runtime.js';
export { recordingsDir };

/** Asserts every name is one recgate reads. */
export function assertRecgateReads(where: string, names: Iterable<string>): void {
  const known = recgateEnvNames();
  for (const name of names) {
    assert.ok(known.has(name), `${where} sets ${name}, which recgate does not read (a typo?)`);
  }
}

/** Methods a running gateway serves at `path` (a real gateway on port 0, closed afterwards). */
export async function methodsServedAt(paths: readonly string[]): Promise<Map<string, string[]>> {
  const stack = await startStack();
  try {
    const table = routeTableOf(stack.gateway.app);
    assert.ok(table, 'the gateway keeps a route table');
    return new Map(paths.map((p) => [p, table.allowed(p)]));
  } finally {
    await stack.close();
  }
}

/** `10s`, `1m30s`, `45s` (compose durations) in milliseconds. */
export function composeDurationMs(text: string): number {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let total = 0;
  let consumed = '';
  for (const [whole, n, unit] of text.matchAll(re)) {
    total += Number(n) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[unit as 'ms' | 's' | 'm' | 'h'];
    consumed += whole;
  }
  assert.equal(consumed, text, `a compose duration: ${text}`);
  return total;
}
