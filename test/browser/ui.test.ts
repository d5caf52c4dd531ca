/**
 * The web UI in real Chromium against a real gateway and emulator: playing, seeking, one upstream download
 * for many plays, parent/child legs, failure messages and tenant isolation. Screenshots of the main views
 * land in test-results/screenshots/.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, afterEach, before, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import type { CallUpsert } from '../../src/call-log/call-log.js';
import { registerDemoCalls } from '../../src/cli/demo.js';
import { type CreateRecordingInput, type DemoCall, seedDemo } from '../../src/emulator/index.js';
import { parseCallSid, parseRecordingSid } from '../../src/sid.js';
import { type Stack, startStack } from '../helpers/stack.js';
import type { PageAudio, PageCanvas, PageDocument, PageElement } from './dom.js';
import {
  type BrowserHandle,
  launchChromium,
  openUi,
  pageErrors,
  requireBrowser,
  row,
  screenshot,
  waitForPlayback,
} from './harness.js';

/** Browser globals, for functions that run in the page. */
declare const document: PageDocument;
declare const window: { innerWidth: number };
declare const sessionStorage: { getItem(key: string): string | null };

let handle: BrowserHandle = { browser: undefined, reason: 'not started' };
let stack: Stack | undefined;
let demo: DemoCall[] = [];
/** Start times of the calls tests add: newest of all, one minute apart, so they sort to the top. */
let clock = Date.now();

before(async () => {
  handle = await launchChromium();
  if (!handle.browser) return;
  stack = await startStack();
  demo = await seedDemo(stack.emulator);
  await registerDemoCalls(stack.gateway.callLog, demo);
});

after(async () => {
  await handle.browser?.close();
  await stack?.close();
});

afterEach(() => {
  stack?.emulator.setThrottle({ ttfbMs: 0, bandwidth: 0 });
  const errors = pageErrors.splice(0);
  assert.deepEqual(errors, [], 'the page threw');
});

const newCallSid = () => `CA${randomBytes(16).toString('hex')}`;

interface TestCall {
  callSid: string;
  recordingSid: string;
  size: number;
}

/**
 * Creates a call with a recording in the emulator and registers it for the business, as a CRM would
 * (recording SID from the webhook, unless the recording is still processing).
 */
async function addCall(
  s: Stack,
  businessId: string,
  input: CreateRecordingInput,
  extra: Partial<CallUpsert> = {},
): Promise<TestCall> {
  clock += 60_000;
  const created = await s.emulator.createRecording({
    from: '+15005550006',
    to: '+14155550100',
    start_time: new Date(clock).toISOString(),
    ...input,
  });
  await s.register({
    businessId,
    callSid: parseCallSid(created.call_sid),
    parentCallSid: created.parent_call_sid === null ? null : parseCallSid(created.parent_call_sid),
    recordingSid:
      created.recording_sid && created.status !== 'processing' && created.parent_call_sid === null
        ? parseRecordingSid(created.recording_sid)
        : undefined,
    direction: created.direction,
    from: created.from,
    to: created.to,
    startedAt: created.start_time,
    durationS: created.duration_s,
    ...extra,
  });
  return { callSid: created.call_sid, recordingSid: created.recording_sid ?? '', size: created.size };
}

function mediaRequests(s: Stack, recordingSid: string): number {
  return s.emulator.stats().media_requests[recordingSid] ?? 0;
}

async function badgeText(page: Page, callSid: string): Promise<string> {
  return (await row(page, callSid).locator('.badge').textContent()) ?? '';
}

async function waitForBadge(page: Page, callSid: string, text: string): Promise<void> {
  await page.waitForFunction(
    ([sid, want]) => document.querySelector(`#call-${sid} .badge`)?.textContent === want,
    [callSid, text] as const,
    { timeout: 10_000 },
  );
}

function setup(t: import('node:test').TestContext): { browser: Browser; s: Stack } | undefined {
  const browser = requireBrowser(t, handle);
  if (!browser || !stack) return undefined;
  return { browser, s: stack };
}

test('lists the business calls with their details and legs (desktop and phone screenshots)', async (t) => {
  const env = setup(t);
  if (!env) return;
  const context = await env.browser.newContext();
  t.after(() => context.close());
  const page = await openUi(context, env.s.url, await env.s.token('acme'));

  assert.equal(new URL(page.url()).hash, '', 'the token is removed from the address bar');
  assert.equal(await page.locator('#business').textContent(), 'acme');
  const acme = demo.filter((c) => c.businessId === 'acme');
  assert.equal(await page.locator('#call-rows tr').count(), acme.length);

  const child = acme.find((c) => c.scenario === 'dial-child')!;
  const childRow = row(page, child.callSid);
  assert.match((await childRow.textContent()) ?? '', new RegExp(`\\${child.from}`));
  assert.match((await childRow.textContent()) ?? '', /Outbound \(dialed leg\)/);
  assert.match((await childRow.locator('.legs').textContent()) ?? '', /leg of call from/);
  const parentRow = row(page, child.parentCallSid!);
  assert.equal(await parentRow.locator(`.legs a[href="#call-${child.callSid}"]`).count(), 1);

  const long = acme.find((c) => c.scenario === 'long')!;
  assert.match((await row(page, long.callSid).textContent()) ?? '', /1:02:05/);
  assert.equal(await badgeText(page, long.callSid), 'not yet fetched');
  assert.equal(await page.locator('audio').count(), 0, 'no player exists before Play is pressed');
  assert.equal(env.s.emulator.stats().total_media_requests, 0, 'listing fetches no audio');

  // Every control names its call for screen readers.
  const unnamed = await page
    .locator('#call-rows button')
    .evaluateAll(
      (buttons) =>
        buttons.filter((b) => !/call from .+ to .+/.test(b.getAttribute('aria-label') ?? '')).length,
    );
  assert.equal(unnamed, 0);

  await screenshot(page, 'list-desktop');

  await page.setViewportSize({ width: 375, height: 812 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no horizontal scrolling at 375 px (overflow ${overflow}px)`);
  await screenshot(page, 'list-phone', false);

  await page.emulateMedia({ colorScheme: 'dark' });
  await page.setViewportSize({ width: 1280, height: 900 });
  await screenshot(page, 'list-dark', false);
});

test('plays a cold recording: audio plays, currentTime advances, one upstream media request', async (t) => {
  const env = setup(t);
  if (!env) return;
  const call = await addCall(env.s, 'acme', { duration_s: 20, from: '+15005550101' });
  const context = await env.browser.newContext();
  t.after(() => context.close());
  const page = await openUi(context, env.s.url, await env.s.token('acme'));
  assert.equal(await badgeText(page, call.callSid), 'not yet fetched');

  await row(page, call.callSid)
    .getByRole('button', { name: /^Play recording of call from \+15005550101/ })
    .click();
  const first = await waitForPlayback(page, call.callSid, 0.2);
  await waitForPlayback(page, call.callSid, first + 0.5);
  await waitForBadge(page, call.callSid, 'cached');
  assert.equal(mediaRequests(env.s, call.recordingSid), 1);
  await screenshot(page, 'player-playing');
});

test('seeks near the end of a long cold recording and resumes there while the download still runs', async (t) => {
  const env = setup(t);
  if (!env) return;
  // Over an hour of audio (about 14.8 MB), sent at 2 MB/s: the download takes about 7 s.
  const call = await addCall(env.s, 'acme', { duration_s: 3700 });
  env.s.emulator.setThrottle({ bandwidth: 2_000_000 });
  const context = await env.browser.newContext();
  t.after(() => context.close());
  const page = await openUi(context, env.s.url, await env.s.token('acme'));

  await row(page, call.callSid).locator('button.play').click();
  await waitForPlayback(page, call.callSid, 0.1);
  const target = await row(page, call.callSid)
    .locator('audio')
    .evaluate((el: PageAudio) => {
      const position = el.duration * 0.75;
      el.currentTime = position;
      return position;
    });
  assert.ok(target > 2700, `duration is known from the first response (seek target ${target}s)`);
  await waitForPlayback(page, call.callSid, target + 0.2, 20_000);
  const sent = env.s.emulator.stats().media_bytes[call.recordingSid] ?? 0;
  assert.ok(
    sent < call.size,
    `playback resumed at ${target}s before the upstream finished (${sent}/${call.size} bytes)`,
  );
  await page.waitForFunction(
    (sid) => /^downloading \d+%$/.test(document.querySelector(`#call-${sid} .badge`)?.textContent ?? ''),
    call.callSid,
    { timeout: 5000 },
  );
  await waitForBadge(page, call.callSid, 'cached');
  // One full download, plus at most a few seek-ahead slices for the far seek: never a second download.
  const requests = mediaRequests(env.s, call.recordingSid);
  assert.ok(requests >= 1 && requests <= 4, `${requests} media requests`);
  const fetched = env.s.emulator.stats().media_bytes[call.recordingSid] ?? 0;
  assert.ok(fetched <= 1.1 * call.size, `upstream bytes ${fetched} ≤ 1.1 × ${call.size}`);
});

test('three fast clicks on Play and the same recording in two tabs: one upstream media request', async (t) => {
  const env = setup(t);
  if (!env) return;
  const call = await addCall(env.s, 'acme', { duration_s: 30 });
  // Slow enough that every play starts while the first download is still running.
  env.s.emulator.setThrottle({ ttfbMs: 300, bandwidth: 60_000 });
  const context = await env.browser.newContext();
  t.after(() => context.close());
  const token = await env.s.token('acme');
  const [tab1, tab2] = [await openUi(context, env.s.url, token), await openUi(context, env.s.url, token)];

  await Promise.all([
    row(tab1, call.callSid).locator('button.play').click({ clickCount: 3, delay: 0 }),
    row(tab2, call.callSid).locator('button.play').click(),
  ]);
  await Promise.all([waitForPlayback(tab1, call.callSid, 0.3), waitForPlayback(tab2, call.callSid, 0.3)]);
  assert.equal(await row(tab1, call.callSid).locator('audio').count(), 1);
  assert.equal(mediaRequests(env.s, call.recordingSid), 1);
});

test("a child call plays its parent's recording (keyboard only)", async (t) => {
  const env = setup(t);
  if (!env) return;
  const parentSid = newCallSid();
  clock += 60_000;
  const parentStart = new Date(clock).toISOString();
  await env.s.emulator.createRecording({
    call_sid: parentSid,
    status: 'absent',
    from: '+15005550202',
    start_time: parentStart,
  });
  const child = await addCall(env.s, 'acme', {
    call_sid: newCallSid(),
    parent_call_sid: parentSid,
    duration_s: 12,
  });
  await env.s.register({
    businessId: 'acme',
    callSid: parseCallSid(parentSid),
    recordingSid: parseRecordingSid(child.recordingSid),
    direction: 'inbound',
    from: '+15005550202',
    to: '+14155550100',
    startedAt: parentStart,
    durationS: 16,
  });
  const context = await env.browser.newContext();
  t.after(() => context.close());
  const page = await openUi(context, env.s.url, await env.s.token('acme'));

  await row(page, child.callSid).locator('button.play').focus();
  await page.keyboard.press('Enter');
  await waitForPlayback(page, child.callSid, 0.3);
  assert.equal(mediaRequests(env.s, child.recordingSid), 1);
  // The parent's own row shows the same (shared) recording as cached once the download is done.
  await waitForBadge(page, child.callSid, 'cached');
  await waitForBadge(page, parentSid, 'cached');

  // "leg of" moves focus to the parent's row.
  await row(page, child.callSid).locator('.legs a').focus();
  await page.keyboard.press('Enter');
  assert.equal(await page.evaluate(() => document.activeElement?.id), `call-${parentSid}`);
});

test('processing, deleted and unavailable recordings show their messages', async (t) => {
  const env = setup(t);
  if (!env) return;
  const processing = await addCall(env.s, 'acme', { status: 'processing', duration_s: 10 });
  const deleted = await addCall(env.s, 'acme', { status: 'deleted', duration_s: 10 });
  const failing = await addCall(env.s, 'acme', { duration_s: 10 });
  env.s.emulator.addFault({ recording_sid: failing.recordingSid, kind: 'http_500', count: 50 });
  const context = await env.browser.newContext();
  t.after(() => context.close());
  const page = await openUi(context, env.s.url, await env.s.token('acme'));

  for (const c of [processing, deleted, failing]) await row(page, c.callSid).locator('button.play').click();
  const message = (c: TestCall) => row(page, c.callSid).locator('.message');
  await message(processing)
    .filter({ hasText: /^Still processing — trying again in \d+ seconds\.$/ })
    .waitFor();
  await message(deleted).filter({ hasText: 'Deleted from Twilio' }).waitFor();
  await message(failing)
    .filter({ hasText: 'Twilio is unavailable — try again.' })
    .waitFor({ timeout: 20_000 });

  assert.equal(await badgeText(page, processing.callSid), 'processing');
  assert.equal(await badgeText(page, deleted.callSid), 'deleted upstream');
  assert.equal(await row(page, deleted.callSid).locator('button.play').isDisabled(), true);
  assert.equal(await row(page, failing.callSid).locator('button.play').isEnabled(), true, 'can try again');
  assert.match((await page.locator('#status').textContent()) ?? '', /— /, 'messages reach the live region');
  await row(page, processing.callSid).scrollIntoViewIfNeeded();
  await screenshot(page, 'error-messages');
});

test('absent and failed recording-status webhooks: the list shows their badges and Play says why it cannot play', async (t) => {
  const env = setup(t);
  if (!env) return;
  /**
   * A call Twilio made no recording for, or failed to record, told by a signed webhook: `fresh` calls had no
   * recording yet (they keep Twilio's word as their state), the others had one registered, which the
   * webhook marks gone.
   */
  const reported = async (status: 'absent' | 'failed', hadRecording: boolean) => {
    const call = await addCall(env.s, 'acme', hadRecording ? { duration_s: 10 } : { status: 'absent' });
    const recordingSid = hadRecording ? call.recordingSid : `RE${randomBytes(16).toString('hex')}`;
    const answer = await env.s.recordingStatus({
      AccountSid: env.s.emulator.accountSid,
      CallSid: call.callSid,
      RecordingSid: recordingSid,
      RecordingStatus: status,
    });
    assert.equal(answer, 204);
    return { ...call, recordingSid };
  };
  const calls = {
    absent: await reported('absent', false),
    failed: await reported('failed', false),
    absentKnown: await reported('absent', true),
    failedKnown: await reported('failed', true),
  };
  const context = await env.browser.newContext();
  t.after(() => context.close());
  const page = await openUi(context, env.s.url, await env.s.token('acme'));

  assert.equal(await badgeText(page, calls.absent.callSid), 'no recording');
  assert.equal(await badgeText(page, calls.failed.callSid), 'recording failed at Twilio');
  assert.equal(await badgeText(page, calls.absentKnown.callSid), 'no recording');
  assert.equal(await badgeText(page, calls.failedKnown.callSid), 'recording failed at Twilio');

  const play = (c: TestCall) => row(page, c.callSid).locator('button.play');
  /** What the Play button's description (the message line it names with aria-describedby) says. */
  const why = (c: TestCall) =>
    play(c).evaluate(
      (button) => document.querySelector(`#${button.getAttribute('aria-describedby')}`)?.textContent ?? '',
    );

  // A recording Twilio reported gone can never play: Play is disabled and says why from the start.
  for (const c of [calls.absentKnown, calls.failedKnown]) {
    assert.equal(await play(c).isDisabled(), true);
  }
  assert.equal(await why(calls.absentKnown), 'No recording — Twilio made none for this call.');
  assert.equal(await why(calls.failedKnown), 'Recording failed at Twilio — this call has no audio.');

  // A call that never had one may still get one (a later webhook): Play asks, and then says why not.
  for (const c of [calls.absent, calls.failed]) await play(c).click();
  for (const c of [calls.absent, calls.failed]) {
    await row(page, c.callSid).locator('.message.bad').waitFor({ timeout: 10_000 });
  }
  assert.equal(await why(calls.absent), 'No recording — Twilio made none for this call.');
  assert.equal(await why(calls.failed), 'Recording failed at Twilio — this call has no audio.');
  assert.equal(await badgeText(page, calls.absent.callSid), 'no recording');
  assert.equal(await badgeText(page, calls.failed.callSid), 'recording failed at Twilio');
  for (const c of Object.values(calls))
    assert.equal(mediaRequests(env.s, c.recordingSid), 0, 'nothing fetched');
  await row(page, calls.absent.callSid).scrollIntoViewIfNeeded();
  await screenshot(page, 'webhook-badges', false);
});

test("business A's session cannot list or play business B's calls", async (t) => {
  const env = setup(t);
  if (!env) return;
  const context = await env.browser.newContext();
  t.after(() => context.close());
  const page = await openUi(context, env.s.url, await env.s.token('acme'));
  const globex = demo.find((c) => c.businessId === 'globex' && c.scenario === 'recorded')!;
  const globexSids = new Set(demo.filter((c) => c.businessId === 'globex').map((c) => c.callSid));

  const shown = await page
    .locator('#call-rows tr')
    .evaluateAll((rows) => rows.map((r) => (r as PageElement).dataset.callSid));
  assert.ok(shown.length > 0);
  assert.deepEqual(
    shown.filter((sid) => globexSids.has(sid!)),
    [],
  );

  // B's signed URL, with its business swapped for A's: the signature no longer matches.
  const issued = await fetch(`${env.s.url}/api/calls/${globex.callSid}/playback-url`, {
    method: 'POST',
    headers: { authorization: `Bearer ${await env.s.token('globex')}` },
  });
  assert.equal(issued.status, 200);
  const signed = new URL(((await issued.json()) as { url: string }).url);
  signed.searchParams.set('bid', 'acme');

  const statuses = await page.evaluate(
    async ([sid, forged]) => {
      const auth = { Authorization: `Bearer ${sessionStorage.getItem('recgate.token')}` };
      const call = await fetch(`/api/calls/${sid}`, { headers: auth });
      const url = await fetch(`/api/calls/${sid}/playback-url`, { method: 'POST', headers: auth });
      const download = await fetch(`/api/calls/${sid}/download`, { headers: auth });
      const forgedUrl = await fetch(forged);
      return [call.status, url.status, download.status, forgedUrl.status];
    },
    [globex.callSid, signed.pathname + signed.search] as const,
  );
  assert.deepEqual(statuses, [404, 404, 404, 401]);
  assert.equal(mediaRequests(env.s, globex.recordingSid!), 0);

  await page.getByRole('button', { name: 'Log out' }).click();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('recgate.token')), null);
  assert.equal(await page.locator('#call-rows tr').count(), 0);
  assert.equal(await page.locator('#login').isVisible(), true);
});

test('renews an expiring playback URL, keeping the position, and recovers when the audio meets an expired one', async (t) => {
  const browser = requireBrowser(t, handle);
  if (!browser) return;
  // Its own gateway, whose playback URLs live two seconds.
  const s = await startStack({ config: { playbackUrlTtlS: 2 } });
  t.after(() => s.close());
  const call = await addCall(s, 'acme', { duration_s: 20 });
  const context = await browser.newContext();
  t.after(() => context.close());
  const page = await openUi(context, s.url, await s.token('acme'));
  const audio = row(page, call.callSid).locator('audio');

  await row(page, call.callSid).locator('button.play').click();
  await waitForPlayback(page, call.callSid, 0.5);
  const [first, position] = await audio.evaluate((el: PageAudio & { src: string; pause(): void }) => {
    el.pause();
    return [el.src, el.currentTime] as const;
  });
  // The paused player gets a fresh URL before the first one expires, at the same position.
  await page.waitForFunction(
    ([sid, old]) =>
      (document.querySelector(`#call-${sid} audio`) as (PageAudio & { src: string }) | null)?.src !== old,
    [call.callSid, first] as const,
    { timeout: 5000 },
  );
  await page.waitForTimeout(300);
  await audio.evaluate((el: PageAudio & { play(): Promise<void> }) => el.play());
  const resumed = await waitForPlayback(page, call.callSid, position + 0.2);
  assert.ok(resumed < position + 3, `resumed at ${resumed}s, paused at ${position}s`);

  // An <audio> handed the expired URL fails; the player finds out why (401) and plays on with a fresh one.
  // (A query parameter the gateway ignores keeps the browser from answering from its HTTP cache.)
  const expired = `${first}&uncached=1`;
  await audio.evaluate((el: PageAudio & { src: string; play(): Promise<void> }, url) => {
    el.src = url;
    el.play().catch(() => {});
  }, expired);
  await page.waitForFunction(
    ([sid, old]) => {
      const el = document.querySelector(`#call-${sid} audio`) as (PageAudio & { src: string }) | null;
      return el !== null && el.src !== old && !el.paused && el.currentTime > 0.2;
    },
    [call.callSid, expired] as const,
    { timeout: 10_000 },
  );
  assert.equal(await row(page, call.callSid).locator('.message').textContent(), '');
  assert.equal(mediaRequests(s, call.recordingSid), 1);
});

test('draws the waveform, seeks where it is clicked, and offers the WAV and dual-channel files', async (t) => {
  const env = setup(t);
  if (!env) return;
  const dual = await addCall(env.s, 'acme', { duration_s: 8, channels: 2, from: '+15005550191' });
  const mono = await addCall(env.s, 'acme', { duration_s: 8, from: '+15005550192' });
  const context = await env.browser.newContext();
  t.after(() => context.close());
  const page = await openUi(context, env.s.url, await env.s.token('acme'));

  for (const call of [dual, mono]) {
    await row(page, call.callSid).locator('button.play').click();
    await waitForPlayback(page, call.callSid, 0.1);
    await page.waitForFunction(
      (sid) => document.querySelector(`#call-${sid} .player`)?.getAttribute('data-dual-channel') !== null,
      call.callSid,
      { timeout: 10_000 },
    );
    await row(page, call.callSid).locator('canvas.waveform:not([hidden])').waitFor({ timeout: 10_000 });
  }
  assert.equal(await row(page, dual.callSid).locator('.player').getAttribute('data-dual-channel'), 'yes');
  assert.equal(await row(page, mono.callSid).locator('.player').getAttribute('data-dual-channel'), 'no');
  assert.equal(await row(page, dual.callSid).locator('button.download-dual').isVisible(), true);
  assert.equal(await row(page, mono.callSid).locator('button.download-dual').isVisible(), false);
  for (const call of [dual, mono]) {
    assert.equal(await row(page, call.callSid).locator('button.download-wav').isVisible(), true);
  }

  // Bars are drawn: some pixels of the canvas are painted.
  const canvas = row(page, dual.callSid).locator('canvas.waveform');
  const painted = await canvas.evaluate((el: PageCanvas) => {
    const { data } = el.getContext('2d').getImageData(0, 0, el.width, el.height);
    let n = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
    return n;
  });
  assert.ok(painted > 100, `${painted} pixels painted`);

  // A click at three quarters of the waveform seeks to three quarters of the recording.
  const box = await canvas.boundingBox();
  assert.ok(box);
  await page.mouse.click(box.x + box.width * 0.75, box.y + box.height / 2);
  const position = await row(page, dual.callSid)
    .locator('audio')
    .evaluate((el: PageAudio) => el.currentTime / el.duration);
  assert.ok(Math.abs(position - 0.75) < 0.05, `seeked to ${position} of the recording`);
  await screenshot(page, 'player-waveform', false);
  // Waveforms and the dual-channel probe fetched nothing more: one media request per recording.
  assert.equal(mediaRequests(env.s, dual.recordingSid), 1);
  assert.equal(mediaRequests(env.s, mono.recordingSid), 1);
});
