/**
 * Prometheus metrics. One set per process, on prom-client's global registry, so that under
 * `--workers N` the primary can aggregate every worker's figures (prom-client's AggregatorRegistry).
 */
import client from 'prom-client';
import { onSyncOff } from '../io/sync-guard.js';
import type { AdmissionObserver } from '../recordings/admission/admission.js';
import type { CacheEventHandler } from '../recordings/events.js';

export interface Metrics {
  httpRequests: client.Counter<'route' | 'method' | 'status'>;
  httpDuration: client.Histogram<'route' | 'method'>;
  cacheEvents: client.Counter<'event'>;
  upstreamRequests: client.Counter<'operation' | 'status'>;
  seekAhead: client.Counter<'outcome'>;
  upstreamBytes: client.Counter<'kind'>;
  upstreamRetries: client.Counter<'reason'>;
  bytesServed: client.Counter<'status'>;
  activeDownloads: client.Gauge;
  cacheBytes: client.Gauge;
  cacheFiles: client.Gauge;
  cacheEvictions: client.Counter<'reason'>;
  cacheEvictedBytes: client.Counter<'reason'>;
  recordingsRemoved: client.Counter<'reason'>;
  auditPlays: client.Counter<'outcome'>;
  prefetchJobs: client.Counter<'outcome'>;
  prefetchQueue: client.Gauge<'state'>;
  upstreamQueueDepth: client.Gauge;
  upstreamAdmitted: client.Gauge;
  upstreamQueueWait: client.Histogram;
  upstreamRejections: client.Counter<'reason'>;
  breakerOpen: client.Gauge<'scope'>;
  breakerTrips: client.Counter<'scope'>;
  connectionsCut: client.Counter<'reason'>;
  syncIoOff: client.Counter<'guard'>;
  registry: client.Registry;
}

/**
 * Which breakers a series counts: `main`, the one breaker of the main account and its subaccounts; `own`,
 * every breaker of an account with its own credentials. No account label: own accounts are unbounded.
 */
export type BreakerScope = 'main' | 'own';
const BREAKER_SCOPES: readonly BreakerScope[] = ['main', 'own'];

let metrics: Metrics | undefined;

function getOrCreate<T>(name: string, make: () => T): T {
  return (client.register.getSingleMetric(name) as T | undefined) ?? make();
}

export function getMetrics(): Metrics {
  if (metrics) return metrics;
  client.collectDefaultMetrics({ prefix: 'recgate_process_' });
  metrics = {
    registry: client.register,
    httpRequests: getOrCreate(
      'recgate_http_requests_total',
      () =>
        new client.Counter({
          name: 'recgate_http_requests_total',
          help: 'HTTP requests answered, by route, method and status',
          labelNames: ['route', 'method', 'status'] as const,
        }),
    ),
    httpDuration: getOrCreate(
      'recgate_http_request_duration_seconds',
      () =>
        new client.Histogram({
          name: 'recgate_http_request_duration_seconds',
          help: 'Time until response headers, by route',
          labelNames: ['route', 'method'] as const,
          buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
        }),
    ),
    cacheEvents: getOrCreate(
      'recgate_cache_events_total',
      () =>
        new client.Counter({
          name: 'recgate_cache_events_total',
          help: 'Recording cache events (cache_hit, cache_miss, lock_wait, takeover, recording_saved, download_failed, …)',
          labelNames: ['event'] as const,
        }),
    ),
    upstreamRequests: getOrCreate(
      'recgate_upstream_requests_total',
      () =>
        new client.Counter({
          name: 'recgate_upstream_requests_total',
          help: 'HTTP exchanges with the upstream (redirects included), by operation and status (or error code)',
          labelNames: ['operation', 'status'] as const,
        }),
    ),
    seekAhead: getOrCreate(
      'recgate_seek_ahead_total',
      () =>
        new client.Counter({
          name: 'recgate_seek_ahead_total',
          help: 'Ranged upstream fetches for far seeks, by outcome (fetched, discarded)',
          labelNames: ['outcome'] as const,
        }),
    ),
    upstreamBytes: getOrCreate(
      'recgate_upstream_bytes_total',
      () =>
        new client.Counter({
          name: 'recgate_upstream_bytes_total',
          help: 'Media bytes received from upstream, by kind (full download, seek-ahead slice)',
          labelNames: ['kind'] as const,
        }),
    ),
    upstreamRetries: getOrCreate(
      'recgate_upstream_retries_total',
      () =>
        new client.Counter({
          name: 'recgate_upstream_retries_total',
          help: 'Upstream requests retried, by reason',
          labelNames: ['reason'] as const,
        }),
    ),
    bytesServed: getOrCreate(
      'recgate_bytes_served_total',
      () =>
        new client.Counter({
          name: 'recgate_bytes_served_total',
          help: 'Recording bytes sent to clients, by status',
          labelNames: ['status'] as const,
        }),
    ),
    activeDownloads: getOrCreate(
      'recgate_active_downloads',
      () =>
        new client.Gauge({ name: 'recgate_active_downloads', help: 'Downloads this process is running now' }),
    ),
    // The cache index is shared by every worker (and host): workers report the same figure, so the
    // primary keeps the largest rather than summing them.
    cacheBytes: getOrCreate(
      'recgate_cache_bytes',
      () =>
        new client.Gauge({
          name: 'recgate_cache_bytes',
          help: 'Bytes of finished recordings in the cache index',
          aggregator: 'max',
        }),
    ),
    cacheFiles: getOrCreate(
      'recgate_cache_files',
      () =>
        new client.Gauge({
          name: 'recgate_cache_files',
          help: 'Finished recordings in the cache index',
          aggregator: 'max',
        }),
    ),
    cacheEvictions: getOrCreate(
      'recgate_cache_evictions_total',
      () =>
        new client.Counter({
          name: 'recgate_cache_evictions_total',
          help: 'Recordings evicted from the disk cache, by reason (max_bytes, min_free, max_age)',
          labelNames: ['reason'] as const,
        }),
    ),
    cacheEvictedBytes: getOrCreate(
      'recgate_cache_evicted_bytes_total',
      () =>
        new client.Counter({
          name: 'recgate_cache_evicted_bytes_total',
          help: 'Bytes evicted from the disk cache, by reason',
          labelNames: ['reason'] as const,
        }),
    ),
    recordingsRemoved: getOrCreate(
      'recgate_recordings_removed_total',
      () =>
        new client.Counter({
          name: 'recgate_recordings_removed_total',
          help: 'Local copies of recordings removed, by reason (purge, upstream_deleted)',
          labelNames: ['reason'] as const,
        }),
    ),
    auditPlays: getOrCreate(
      'recgate_audit_plays_total',
      () =>
        new client.Counter({
          name: 'recgate_audit_plays_total',
          help: 'Plays written to the audit trail, by outcome (logged; stored in the plays table; dropped when the table could not keep up)',
          labelNames: ['outcome'] as const,
        }),
    ),
    prefetchJobs: getOrCreate(
      'recgate_prefetch_jobs_total',
      () =>
        new client.Counter({
          name: 'recgate_prefetch_jobs_total',
          help: 'Prefetch attempts by outcome (done, retry, failed)',
          labelNames: ['outcome'] as const,
        }),
    ),
    prefetchQueue: getOrCreate(
      'recgate_prefetch_queue',
      () =>
        new client.Gauge({
          name: 'recgate_prefetch_queue',
          help: 'Prefetch jobs by state (queued, running, failed), read from the shared queue',
          labelNames: ['state'] as const,
          // Every worker reads the same shared queue: under --workers, the primary takes one reading, not the sum.
          aggregator: 'max',
        }),
    ),
    upstreamQueueDepth: getOrCreate(
      'recgate_upstream_queue_depth',
      () =>
        new client.Gauge({
          name: 'recgate_upstream_queue_depth',
          help: 'Cold requests waiting for an upstream download slot',
        }),
    ),
    upstreamAdmitted: getOrCreate(
      'recgate_upstream_admitted',
      () =>
        new client.Gauge({
          name: 'recgate_upstream_admitted',
          help: 'Upstream download slots in use (downloads admitted and running)',
        }),
    ),
    upstreamQueueWait: getOrCreate(
      'recgate_upstream_queue_wait_seconds',
      () =>
        new client.Histogram({
          name: 'recgate_upstream_queue_wait_seconds',
          help: 'Time a download waited for its upstream slot (0 when one was free)',
          buckets: [0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
        }),
    ),
    upstreamRejections: getOrCreate(
      'recgate_upstream_rejections_total',
      () =>
        new client.Counter({
          name: 'recgate_upstream_rejections_total',
          help: 'Cold requests refused before a download, by reason (queue_full, timeout, abandoned, throttled, rate_limited), and cold HEADs that found no turn (head_busy)',
          labelNames: ['reason'] as const,
        }),
    ),
    breakerOpen: getOrCreate('recgate_upstream_breaker_open', () => {
      const gauge = new client.Gauge({
        name: 'recgate_upstream_breaker_open',
        help: 'Upstream breakers open after a 429, by scope: main (the main account and its subaccounts; 1 per worker) or own (accounts with their own credentials, counted); summed over workers',
        labelNames: ['scope'] as const,
      });
      for (const scope of BREAKER_SCOPES) gauge.set({ scope }, 0);
      return gauge;
    }),
    breakerTrips: getOrCreate('recgate_upstream_breaker_trips_total', () => {
      const counter = new client.Counter({
        name: 'recgate_upstream_breaker_trips_total',
        help: 'Times a 429 opened an upstream breaker, by scope (main, own)',
        labelNames: ['scope'] as const,
      });
      for (const scope of BREAKER_SCOPES) counter.inc({ scope }, 0);
      return counter;
    }),
    connectionsCut: getOrCreate(
      'recgate_connections_cut_total',
      () =>
        new client.Counter({
          name: 'recgate_connections_cut_total',
          help: 'Connections the gateway closed on a stalled client, by reason (request_timeout, send_timeout)',
          labelNames: ['reason'] as const,
        }),
    ),
    syncIoOff: getOrCreate(
      'recgate_sync_io_off_total',
      () =>
        new client.Counter({
          name: 'recgate_sync_io_off_total',
          help: 'Times slow synchronous file-system calls turned them off for a while (io/sync-guard.ts), by guard (metadata, reads)',
          labelNames: ['guard'] as const,
        }),
    ),
  };
  // Once per process, as the guards are the process's (however many gateways it runs).
  onSyncOff(({ guard }) => metrics?.syncIoOff.inc({ guard }));
  return metrics;
}

/**
 * Counts the recording cache's events: every event by name, downloads running now (one starts with a miss
 * or a takeover, and ends saved or failed; a failed *wait* is no download), local copies removed by reason,
 * upstream bytes by kind (full download, seek-ahead slice) and slice requests by outcome.
 */
export function cacheEventMetrics(metrics: Metrics): CacheEventHandler {
  return (e) => {
    metrics.cacheEvents.inc({ event: e.event });
    switch (e.event) {
      case 'cache_miss':
      case 'takeover':
        metrics.activeDownloads.inc();
        break;
      case 'recording_saved':
        metrics.activeDownloads.dec();
        metrics.upstreamBytes.inc({ kind: 'full' }, e.bytes);
        break;
      case 'download_failed':
        if (e.phase === 'download') metrics.activeDownloads.dec();
        break;
      case 'recording_removed':
        // A purge repeated, or of a recording never downloaded, is reported too: it removed no copy.
        if (e.size !== null) metrics.recordingsRemoved.inc({ reason: e.reason });
        break;
      case 'seek_ahead':
      case 'seek_ahead_discarded':
        metrics.seekAhead.inc({ outcome: e.event === 'seek_ahead' ? 'fetched' : 'discarded' });
        metrics.upstreamBytes.inc({ kind: 'slice' }, e.bytes);
        break;
    }
  };
}

/** Maps the admission's reports to the queue depth, slots in use, wait times and refusals. */
export function admissionMetrics(metrics: Metrics): AdmissionObserver {
  return (e) => {
    switch (e.kind) {
      case 'granted':
        metrics.upstreamQueueWait.observe(e.waitMs / 1000);
        break;
      case 'rejected':
        metrics.upstreamRejections.inc({ reason: e.reason });
        break;
      case 'changed':
        metrics.upstreamQueueDepth.set(e.queued);
        metrics.upstreamAdmitted.set(e.active);
        break;
    }
  };
}

/**
 * Maps a breaker's changes to the open gauge and trip counter of `scope`. The main breaker sets its gauge
 * to 1 or 0; each own breaker adds 1 while it is open (a breaker reports each open and each close once).
 */
export function breakerMetrics(metrics: Metrics, scope: BreakerScope): (open: boolean) => void {
  return (open) => {
    if (scope === 'main') metrics.breakerOpen.set({ scope }, open ? 1 : 0);
    else if (open) metrics.breakerOpen.inc({ scope });
    else metrics.breakerOpen.dec({ scope });
    if (open) metrics.breakerTrips.inc({ scope });
  };
}
