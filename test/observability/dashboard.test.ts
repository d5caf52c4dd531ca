/**
 * docs/grafana-dashboard.json stays true: every metric a panel queries is one recgate exports, and every
 * metric recgate exports is on some panel.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { it } from 'node:test';
import client from 'prom-client';
import { getMetrics } from '../../src/observability/metrics.js';

interface Panel {
  title: string;
  targets: Array<{ expr: string }>;
}

it('the Grafana dashboard queries only metrics recgate exports, and shows every one of them', async () => {
  getMetrics();
  const dashboard = JSON.parse(
    readFileSync(new URL('../../docs/grafana-dashboard.json', import.meta.url), 'utf8'),
  );
  const exported = new Set((await client.register.getMetricsAsJSON()).map((m) => m.name));
  const queried = new Set<string>();
  for (const panel of dashboard.panels as Panel[]) {
    assert.ok(panel.targets.length > 0, panel.title);
    for (const { expr } of panel.targets) {
      for (const [name] of expr.matchAll(/recgate_[a-z_]+/g)) {
        queried.add(name.replace(/_(bucket|sum|count)$/, ''));
      }
    }
  }
  for (const name of queried) assert.ok(exported.has(name), `${name} is queried but not exported`);
  const own = [...exported].filter((n) => !n.startsWith('recgate_process_') && !n.startsWith('nodejs_'));
  for (const name of own) assert.ok(queried.has(name), `${name} is exported but on no panel`);
  assert.ok(queried.has('recgate_process_process_resident_memory_bytes'));
});
