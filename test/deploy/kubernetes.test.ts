/** Static checks of deploy/kubernetes/ against the image, the gateway's routes and its configuration. */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { test } from 'node:test';
import {
  assertRecgateReads,
  databaseKindOf,
  gatewayConfig,
  imageFacts,
  lockBackendOf,
  methodsServedAt,
  readRepoFile,
} from './helpers.js';
import { parseYaml, parseYamlDocuments, type Yaml } from './yaml.js';

// biome-ignore lint/suspicious/noExplicitAny: manifests are walked as loosely typed trees.
type K8s = any;

const DIR = 'deploy/kubernetes';
const files = readdirSync(new URL(`../../${DIR}/`, import.meta.url)).filter((f) => f.endsWith('.yaml'));
const manifests: { file: string; doc: K8s }[] = files.flatMap((file) =>
  parseYamlDocuments(readRepoFile(`${DIR}/${file}`)).map((doc: Yaml) => ({ file, doc })),
);

function only(kind: string): { file: string; doc: K8s } {
  const found = manifests.filter((m) => m.doc.kind === kind);
  assert.equal(found.length, 1, `one ${kind} in ${DIR}`);
  return found[0]!;
}

const deployment = only('Deployment').doc;
const pod = deployment.spec.template;
const container = pod.spec.containers[0];
const secret = only('Secret');

/** The container's environment, secretKeyRefs read from the Secret template. */
function containerEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const entry of container.env as K8s[]) {
    if (entry.valueFrom !== undefined) {
      const ref = entry.valueFrom.secretKeyRef;
      assert.ok(ref, `${entry.name}: only secretKeyRef is used`);
      assert.equal(ref.name, secret.doc.metadata.name, `${entry.name} reads the Secret the template defines`);
      const value = secret.doc.stringData[ref.key];
      // An optional key may stay out of the template (a secret with no safe example value): then unset.
      if (value === undefined && ref.optional === true) continue;
      assert.ok(value !== undefined, `${entry.name}: the Secret template has key ${ref.key}`);
      env[entry.name] = String(value);
    } else {
      env[entry.name] = String(entry.value);
    }
  }
  return env;
}

test('kubernetes: every variable the Deployment sets is one recgate reads, and each required one is set', () => {
  const env = containerEnv();
  assertRecgateReads(`${DIR}/deployment.yaml`, Object.keys(env));
  gatewayConfig(`${DIR}/deployment.yaml`, env);
  assert.equal(secret.file, 'secret.example.yaml', 'the Secret is a template');
});

test('kubernetes: more than one replica selects PostgreSQL for the call log and the lock', () => {
  assert.ok(deployment.spec.replicas > 1);
  const config = gatewayConfig(`${DIR}/deployment.yaml`, containerEnv());
  assert.equal(databaseKindOf(config), 'postgres');
  assert.equal(lockBackendOf(config), 'postgres');
});

test('kubernetes: the probes point at real routes on the container port', async () => {
  const readiness = container.readinessProbe.httpGet;
  const liveness = container.livenessProbe.httpGet;
  assert.equal(readiness.path, '/readyz');
  assert.equal(liveness.path, '/healthz');
  const served = await methodsServedAt([readiness.path, liveness.path]);
  for (const [path, methods] of served) assert.ok(methods.includes('GET'), `the gateway serves GET ${path}`);
  const config = gatewayConfig(`${DIR}/deployment.yaml`, containerEnv());
  const port = (container.ports as K8s[]).find((p) => p.name === readiness.port);
  assert.ok(port, `a container port named ${readiness.port}`);
  assert.equal(port.containerPort, config.port, 'the gateway listens on the probed port');
  assert.equal(liveness.port, readiness.port);
});

test('kubernetes: the grace period outlasts the drain, which outlasts the readiness probe noticing', () => {
  const config = gatewayConfig(`${DIR}/deployment.yaml`, containerEnv());
  const grace = pod.spec.terminationGracePeriodSeconds * 1000;
  assert.ok(
    grace > config.drainDelayMs + config.shutdownTimeoutMs,
    `terminationGracePeriodSeconds ${grace} ms > drain delay ${config.drainDelayMs} + shutdown timeout ${config.shutdownTimeoutMs}`,
  );
  const probe = container.readinessProbe;
  const noticed = probe.periodSeconds * probe.failureThreshold * 1000;
  assert.ok(config.drainDelayMs > noticed, `drain delay ${config.drainDelayMs} ms > readiness ${noticed} ms`);
  for (const kind of ['requests', 'limits']) {
    assert.ok(container.resources?.[kind]?.memory, `resources.${kind}.memory is set`);
  }
  assert.ok(container.resources.requests.cpu, 'resources.requests.cpu is set');
});

test("kubernetes: a ReadWriteMany claim at the image's data dir, owned by the image's user", () => {
  const image = imageFacts();
  const mount = (container.volumeMounts as K8s[]).find((m) => m.mountPath === image.dataDir);
  assert.ok(mount, `a volume is mounted at ${image.dataDir}`);
  const volume = (pod.spec.volumes as K8s[]).find((v) => v.name === mount.name);
  const pvc = only('PersistentVolumeClaim').doc;
  assert.equal(volume.persistentVolumeClaim.claimName, pvc.metadata.name);
  assert.deepEqual(pvc.spec.accessModes, ['ReadWriteMany']);
  const security = pod.spec.securityContext;
  assert.equal(security.runAsNonRoot, true);
  assert.equal(security.runAsUser, image.uid);
  assert.equal(security.fsGroup, image.uid);
});

test('kubernetes: the Service and the PodDisruptionBudget select the pods; kustomize lists every manifest', () => {
  const labels = pod.metadata.labels;
  const matches = (selector: Record<string, string>) =>
    Object.entries(selector).every(([k, v]) => labels[k] === v) && Object.keys(selector).length > 0;
  assert.ok(matches(deployment.spec.selector.matchLabels));
  const service = only('Service').doc;
  assert.ok(matches(service.spec.selector));
  const portNames = (container.ports as K8s[]).map((p) => p.name);
  for (const p of service.spec.ports)
    assert.ok(portNames.includes(p.targetPort), `targetPort ${p.targetPort}`);
  const pdb = only('PodDisruptionBudget').doc;
  assert.ok(matches(pdb.spec.selector.matchLabels));
  assert.ok(pdb.spec.minAvailable >= 1 && pdb.spec.minAvailable < deployment.spec.replicas);

  const kustomization = parseYaml(readRepoFile(`${DIR}/kustomization.yaml`)) as K8s;
  const listed = [...kustomization.resources].sort();
  const expected = files.filter((f) => f !== 'kustomization.yaml' && f !== 'secret.example.yaml').sort();
  assert.deepEqual(listed, expected);
});
