/**
 * The base image the container test builds the Dockerfile on. No container registry is reachable here, so
 * `node:20-bookworm-slim` cannot be pulled: this assembles its stand-in from Debian's packages instead, as
 * that image is made: `debootstrap --variant=minbase bookworm` from this machine's Debian mirror, plus
 * Node.js 20 under /usr/local (binary, npm and headers, where the official image keeps them).
 *
 * Debian bookworm's own `nodejs` is 18, below recgate's 20.18.1, and no other apt source with Node 20 is
 * reachable from here; so the Node.js added is this machine's own (the `node` running this test, with the
 * npm and headers installed beside it). The machine's extra CA certificates (NODE_EXTRA_CA_CERTS, else its
 * CA bundle, which holds its egress proxy's) go along as the image's NODE_EXTRA_CA_CERTS, so that `npm ci`
 * in the build reaches the registry as it does on the host.
 *
 * The image is tagged by a hash of every input (this file, the suite, the mirror, the Node binary, npm's
 * version, the CA file), so a second run finds it and skips the minute of debootstrap.
 */
import { createHash } from 'node:crypto';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { descendantsOf, imageGraph, podman, podmanEnv, run } from './podman.js';

const SUITE = 'bookworm';
const FALLBACK_MIRROR = 'http://deb.debian.org/debian';
/** The machine's CA bundle, which holds any local CA (an egress proxy's) that update-ca-certificates added. */
const SYSTEM_CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

/** The Debian mirror this machine's apt uses for `SUITE` (deb822 `.sources` or one-line `.list` files). */
export function debianMirror(): string {
  const files = ['/etc/apt/sources.list'];
  const dir = '/etc/apt/sources.list.d';
  try {
    for (const name of readdirSync(dir).sort()) {
      if (name.endsWith('.list') || name.endsWith('.sources')) files.push(join(dir, name));
    }
  } catch {
    // No sources.list.d: only sources.list counts.
  }
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const stanza of text.split(/\n\s*\n/)) {
      const uris = /^URIs:\s*(\S+)/m.exec(stanza);
      const suites = /^Suites:\s*(.+)$/m.exec(stanza);
      if (uris && suites?.[1]?.split(/\s+/).includes(SUITE) && /\/debian\/?$/.test(uris[1]!)) {
        return uris[1]!.replace(/\/$/, '');
      }
    }
    for (const line of text.split('\n')) {
      const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/.exec(line.trim());
      if (m && m[2] === SUITE && /\/debian\/?$/.test(m[1]!)) return m[1]!.replace(/\/$/, '');
    }
  }
  return FALLBACK_MIRROR;
}

interface NodeInstall {
  binary: string;
  npmDir: string;
  headersDir: string;
  npmVersion: string;
}

/** The Node.js running this process, with the npm and headers installed beside it. */
function hostNode(): NodeInstall {
  const binary = realpathSync(process.execPath);
  const prefix = dirname(dirname(binary));
  const npmDir = join(prefix, 'lib', 'node_modules', 'npm');
  const headersDir = join(prefix, 'include', 'node');
  for (const [what, p] of [
    ['npm', join(npmDir, 'package.json')],
    ['Node headers', join(headersDir, 'node_version.h')],
  ] as const) {
    if (!existsSync(p)) throw new Error(`the base image needs ${what} beside ${binary}, at ${p}`);
  }
  const npmVersion = (JSON.parse(readFileSync(join(npmDir, 'package.json'), 'utf8')) as { version: string })
    .version;
  return { binary, npmDir, headersDir, npmVersion };
}

function fileHash(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/**
 * Returns the tag of the local base image, building it first unless an image with the same inputs exists.
 * `log` hears each step (the build takes a minute or two the first time).
 */
export async function ensureBaseImage(log: (line: string) => void = () => {}): Promise<string> {
  const node = hostNode();
  const mirror = debianMirror();
  const caFile = [process.env.NODE_EXTRA_CA_CERTS, SYSTEM_CA_BUNDLE].find((f) => f && existsSync(f));
  const key = createHash('sha256')
    .update(
      JSON.stringify({
        recipe: fileHash(fileURLToPath(import.meta.url)),
        suite: SUITE,
        mirror,
        node: fileHash(node.binary),
        npm: node.npmVersion,
        ca: caFile && fileHash(caFile),
      }),
    )
    .digest('hex')
    .slice(0, 16);
  const tag = `localhost/recgate-base:${SUITE}-node${process.versions.node}-${key}`;
  if ((await podman(['image', 'exists', tag])).code === 0) {
    log(`base image ${tag}: cached`);
    return tag;
  }

  const rootfs = mkdtempSync(join(tmpdir(), 'recgate-rootfs-'));
  try {
    log(`base image ${tag}: debootstrap --variant=minbase ${SUITE} from ${mirror}`);
    const boot = await run('debootstrap', ['--variant=minbase', '--include=passwd', SUITE, rootfs, mirror], {
      timeoutMs: 900_000,
    });
    if (boot.code !== 0) {
      throw new Error(
        `debootstrap exited ${boot.code ?? boot.signal}:\n${(boot.stdout + boot.stderr).slice(-4000)}`,
      );
    }
    log(`base image ${tag}: adding Node.js ${process.version} and npm ${node.npmVersion} under /usr/local`);
    const local = join(rootfs, 'usr', 'local');
    mkdirSync(join(local, 'bin'), { recursive: true });
    mkdirSync(join(local, 'lib', 'node_modules'), { recursive: true });
    mkdirSync(join(local, 'include'), { recursive: true });
    cpSync(node.binary, join(local, 'bin', 'node'));
    cpSync(node.npmDir, join(local, 'lib', 'node_modules', 'npm'), { recursive: true });
    cpSync(node.headersDir, join(local, 'include', 'node'), { recursive: true });
    symlinkSync('../lib/node_modules/npm/bin/npm-cli.js', join(local, 'bin', 'npm'));
    symlinkSync('../lib/node_modules/npm/bin/npx-cli.js', join(local, 'bin', 'npx'));
    const changes = ['ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'CMD ["node"]'];
    if (caFile) {
      mkdirSync(join(local, 'share', 'ca-certificates'), { recursive: true });
      cpSync(caFile, join(local, 'share', 'ca-certificates', 'host-extra-ca.pem'));
      changes.push('ENV NODE_EXTRA_CA_CERTS=/usr/local/share/ca-certificates/host-extra-ca.pem');
    }
    // What the official image leaves out too: downloaded packages and apt's lists.
    rmSync(join(rootfs, 'var', 'cache', 'apt', 'archives'), { recursive: true, force: true });
    mkdirSync(join(rootfs, 'var', 'cache', 'apt', 'archives', 'partial'), { recursive: true });
    rmSync(join(rootfs, 'var', 'lib', 'apt', 'lists'), { recursive: true, force: true });
    mkdirSync(join(rootfs, 'var', 'lib', 'apt', 'lists', 'partial'), { recursive: true });

    log(`base image ${tag}: podman import`);
    const imported = await run(
      'bash',
      [
        '-o',
        'pipefail',
        '-c',
        'dir=$1; tag=$2; shift 2; tar -C "$dir" -c . | podman --runtime runc import "$@" - "$tag"',
        'import',
        rootfs,
        tag,
        ...changes.flatMap((c) => ['--change', c]),
      ],
      { env: podmanEnv(), timeoutMs: 600_000 },
    );
    if (imported.code !== 0) {
      throw new Error(
        `podman import exited ${imported.code ?? imported.signal}:\n${imported.stderr.slice(-4000)}`,
      );
    }
    await removeStaleBaseImages(tag, log);
    return tag;
  } finally {
    rmSync(rootfs, { recursive: true, force: true });
  }
}

/**
 * Removes the base images of earlier inputs, with every image built on them (the Dockerfile's stage caches
 * and test images): hundreds of megabytes each that no later run can use.
 */
async function removeStaleBaseImages(current: string, log: (line: string) => void): Promise<void> {
  const graph = await imageGraph();
  for (const [id, node] of graph) {
    const stale = node.tags.filter((t) => t.startsWith('localhost/recgate-base:') && t !== current);
    if (stale.length === 0) continue;
    log(`base image ${stale.join(', ')}: stale, removed with the images built on it`);
    await podman(['rmi', '--force', ...descendantsOf(graph, id), id]);
  }
}
