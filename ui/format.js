/**
 * How call data reads on the page: times, durations, byte counts, directions and a call's spoken name.
 * Pure functions of their arguments; nothing here touches the DOM or the network.
 */

const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

export function formatTime(iso) {
  const date = iso ? new Date(iso) : null;
  return date && !Number.isNaN(date.getTime()) ? dateTimeFormat.format(date) : 'unknown time';
}

export function formatDuration(seconds) {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds < 0) return '—';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} kB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

const DIRECTIONS = {
  inbound: 'Inbound',
  'outbound-api': 'Outbound',
  'outbound-dial': 'Outbound (dialed leg)',
};

export function formatDirection(direction) {
  return direction ? (DIRECTIONS[direction] ?? direction) : '—';
}

/** How a call is named to screen readers and in messages: "call from A to B, 3 Mar 2025, 10:04". */
export function callLabel(call) {
  return `call from ${call.from ?? 'unknown'} to ${call.to ?? 'unknown'}, ${formatTime(call.started_at)}`;
}
