/** Static checks of compose.yaml and .env.example against the image and recgate's own configuration. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  assertRecgateReads,
  composeDurationMs,
  databaseKindOf,
  gatewayConfig,
  imageFacts,
  lockBackendOf,
  readRepoFile,
  recgateEnvNames,
} from './helpers.js';
import { parseYaml, type Yaml } from './yaml.js';

type Service = { [key: string]: Yaml };

const compose = parseYaml(readRepoFile('compose.yaml')) as {
  services: Record<string, Service>;
  volumes: Yaml;
};
const services = compose.services;
const namedVolumes = Object.keys((compose.volumes ?? {}) as object);

/** .env.example's variables and values, as `docker compose` would read a copy of it as .env. */
function envExample(): Map<string, string> {
  const vars = new Map<string, string>();
  for (const line of readRepoFile('.env.example').split('\n')) {
    if (line.trim() === '' || line.startsWith('#')) continue;
    const m = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(line);
    assert.ok(m, `.env.example: not NAME=value: ${line}`);
    assert.ok(!vars.has(m[1]!), `.env.example: ${m[1]} twice`);
    vars.set(m[1]!, m[2]!);
  }
  return vars;
}

const INTERPOLATION = /\$\{([A-Z][A-Z0-9_]*)(?:(:?[-?])([^}]*))?\}/g;

/** `${VAR}`, `${VAR:-default}`, `${VAR:?error}` resolved against `vars` as compose resolves them. */
function interpolate(text: string, vars: Map<string, string>): string {
  return text.replace(INTERPOLATION, (_all, name: string, op: string | undefined, arg: string) => {
    const value = vars.get(name);
    if (op === ':?' || op === '?') {
      assert.ok(value !== undefined && (op === '?' || value !== ''), `compose would stop: ${arg}`);
      return value!;
    }
    if (op === ':-') return value === undefined || value === '' ? arg : value;
    if (op === '-') return value ?? arg;
    return value ?? '';
  });
}

function environmentOf(service: Service): Record<string, string> {
  const env = service.environment ?? {};
  assert.ok(!Array.isArray(env), 'environment is written as a mapping');
  return Object.fromEntries(Object.entries(env as object).map(([k, v]) => [k, String(v ?? '')]));
}

const isRecgate = (s: Service) => s.build === '.' || String(s.image ?? '').startsWith('recgate:');
const commandOf = (s: Service) => (Array.isArray(s.command) ? (s.command as string[]) : ['serve']);
const gateways = Object.entries(services).filter(([, s]) => isRecgate(s) && commandOf(s)[0] === 'serve');
const profilesOf = (s: Service) => (s.profiles ?? []) as string[];

/** The resolved configuration of one compose gateway, with .env.example copied to .env. */
function configOf(name: string) {
  const vars = envExample();
  const env = Object.fromEntries(
    Object.entries(environmentOf(services[name]!)).map(([k, v]) => [k, interpolate(v, vars)]),
  );
  return gatewayConfig(`compose service ${name}`, env);
}

test('compose: every variable a gateway sets is one recgate reads, and each gateway has what it requires', () => {
  assert.ok(gateways.length >= 3, 'default, scale and demo gateways');
  for (const [name, service] of gateways) {
    assertRecgateReads(`compose service ${name}`, Object.keys(environmentOf(service)));
    const config = configOf(name);
    const image = imageFacts();
    assert.equal(config.dataDir, image.dataDir, `${name} keeps the image's data dir`);
    const stop = composeDurationMs(String(service.stop_grace_period ?? '10s'));
    assert.ok(
      stop > config.drainDelayMs + config.shutdownTimeoutMs,
      `${name}: stop_grace_period ${stop} ms must exceed the drain (${config.drainDelayMs} + ${config.shutdownTimeoutMs} ms)`,
    );
  }
});

test('compose: .env.example documents every variable compose.yaml interpolates, and only those', () => {
  const text = readRepoFile('compose.yaml');
  const used = new Set([...text.matchAll(INTERPOLATION)].map((m) => m[1]!));
  const documented = envExample();
  assert.deepEqual([...documented.keys()].sort(), [...used].sort());
  const recgate = recgateEnvNames();
  const text2 = readRepoFile('.env.example');
  for (const name of documented.keys()) {
    if (!recgate.has(name)) {
      assert.match(text2, /Not read by recgate/, `${name} is not recgate's, and .env.example says so`);
    }
  }
});

test("compose: each gateway's volume is mounted at the image's data dir, a named volume", () => {
  const dataDir = imageFacts().dataDir;
  for (const [name, service] of gateways) {
    const volumes = (service.volumes ?? []) as string[];
    const data = volumes.filter((v) => v.split(':')[1] === dataDir);
    assert.equal(data.length, 1, `${name} mounts one volume at ${dataDir}`);
    const source = data[0]!.split(':')[0]!;
    assert.ok(namedVolumes.includes(source), `${name}: ${source} is a named volume declared in compose.yaml`);
  }
});

test('compose: the default profile is one gateway on SQLite', () => {
  const defaults = gateways.filter(([, s]) => profilesOf(s).length === 0);
  assert.equal(defaults.length, 1);
  const [name, service] = defaults[0]!;
  assert.equal((service.deploy as Service | undefined)?.replicas ?? 1, 1);
  const config = configOf(name);
  assert.equal(databaseKindOf(config), 'sqlite');
  assert.equal(lockBackendOf(config), 'fs');
});

test('compose: the scale profile runs PostgreSQL and two replicas on one volume with the PostgreSQL lock', () => {
  const scale = gateways.filter(([, s]) => profilesOf(s).includes('scale'));
  const replicas = scale.reduce(
    (n, [, s]) => n + Number((s.deploy as Service | undefined)?.replicas ?? 1),
    0,
  );
  assert.ok(replicas >= 2, `${replicas} scale replicas`);
  const volumes = new Set(scale.flatMap(([, s]) => (s.volumes as string[]).map((v) => v.split(':')[0])));
  assert.equal(volumes.size, 1, 'every scale replica mounts the same recordings volume');
  const postgres = Object.entries(services).filter(
    ([, s]) => String(s.image ?? '').startsWith('postgres:') && profilesOf(s).includes('scale'),
  );
  assert.equal(postgres.length, 1, 'a PostgreSQL service in the scale profile');
  const [pgName, pgService] = postgres[0]!;
  const vars = envExample();
  const pgEnv = Object.fromEntries(
    Object.entries(environmentOf(pgService)).map(([k, v]) => [k, interpolate(v, vars)]),
  );
  for (const [name, service] of scale) {
    const config = configOf(name);
    assert.equal(databaseKindOf(config), 'postgres', `${name} keeps its call log in PostgreSQL`);
    assert.equal(lockBackendOf(config), 'postgres', `${name} takes the PostgreSQL lock`);
    const url = new URL(config.databaseUrl!);
    assert.equal(url.hostname, pgName);
    assert.equal(decodeURIComponent(url.username), pgEnv.POSTGRES_USER);
    assert.equal(decodeURIComponent(url.password), pgEnv.POSTGRES_PASSWORD);
    assert.equal(url.pathname, `/${pgEnv.POSTGRES_DB}`);
    assert.ok(Object.hasOwn((service.depends_on ?? {}) as object, pgName), `${name} waits for ${pgName}`);
  }
});

test('compose: the demo profile runs recgate emulator and a gateway using its address and credentials', () => {
  const emulators = Object.entries(services).filter(
    ([, s]) => isRecgate(s) && commandOf(s)[0] === 'emulator' && profilesOf(s).includes('demo'),
  );
  assert.equal(emulators.length, 1);
  const [emuName, emulator] = emulators[0]!;
  const flags = Object.fromEntries(
    commandOf(emulator)
      .slice(1)
      .map((f) => /^--([a-z-]+)(?:=(.*))?$/.exec(f)!)
      .map((m) => [m[1]!, m[2] ?? true]),
  );
  const demo = gateways.filter(([, s]) => profilesOf(s).includes('demo'));
  assert.equal(demo.length, 1);
  const config = configOf(demo[0]![0]);
  assert.equal(config.twilioApiBase, `http://${emuName}:${flags.port}`);
  assert.equal(config.twilioAccountSid, flags['account-sid']);
  assert.equal(config.twilioAuthToken, flags['auth-token']);
  assert.equal(flags.host, '0.0.0.0', 'the emulator is reachable from the gateway container');
});
