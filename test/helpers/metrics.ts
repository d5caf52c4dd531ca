/** Reading a gateway's /metrics in tests. */
import { request } from 'undici';
import type { Stack } from './stack.js';

/**
 * The value of one sample in the gateway's /metrics, 0 when absent. `sample` is a metric name, summed over
 * its label sets, or a name with its labels as /metrics prints them (`recgate_x_total{reason="purge"}`).
 * prom-client's registry is the process's, so a test compares readings before and after, not absolute values.
 */
export async function metric(stack: Pick<Stack, 'url'>, sample: string): Promise<number> {
  const res = await request(`${stack.url}/metrics`);
  const text = await res.body.text();
  let total = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${sample} `) || line.startsWith(`${sample}{`)) {
      total += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
  }
  return total;
}
