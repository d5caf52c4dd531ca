/**
 * Real-browser harness: Debian's Chromium driven by playwright-core, plus helpers for the web UI's pages.
 *
 * Where Chromium is missing, tests skip with a visible message; under `CI=true` they fail instead, so CI
 * can never pass by skipping.
 */
import { access, mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { type Browser, type BrowserContext, chromium, type Locator, type Page } from 'playwright-core';
import type { PageAudio, PageDocument } from './dom.js';

/** Browser globals, for functions that run in the page. */
declare const document: PageDocument;

export const CHROMIUM_PATH = process.env.RECGATE_CHROMIUM_PATH ?? '/usr/bin/chromium';
export const SCREENSHOT_DIR = path.resolve('test-results/screenshots');

const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
];

export interface BrowserHandle {
  /** The browser, or undefined when it could not be started (see `reason`). */
  browser: Browser | undefined;
  reason: string;
}

/** Launches Chromium, or explains why not. Never throws. */
export async function launchChromium(): Promise<BrowserHandle> {
  try {
    await access(CHROMIUM_PATH);
  } catch {
    return {
      browser: undefined,
      reason: `chromium not installed: ${CHROMIUM_PATH} is missing (apt-get install chromium)`,
    };
  }
  try {
    const browser = await chromium.launch({
      executablePath: CHROMIUM_PATH,
      args: CHROMIUM_ARGS,
      timeout: 30_000,
    });
    return { browser, reason: '' };
  } catch (err) {
    return {
      browser: undefined,
      reason: `chromium failed to start: ${(err as Error).message.split('\n')[0]}`,
    };
  }
}

/**
 * The browser for a test. Without one, skips the test with the reason, except under CI=true, where it
 * fails: CI always runs the browser tests.
 */
export function requireBrowser(t: TestContext, handle: BrowserHandle): Browser | undefined {
  if (handle.browser) return handle.browser;
  if (process.env.CI === 'true') throw new Error(`browser tests must run in CI: ${handle.reason}`);
  t.skip(handle.reason);
  return undefined;
}

/** Uncaught errors of every page opened with {@link openUi}; tests assert it stays empty. */
export const pageErrors: string[] = [];

/** A fresh tab (own sessionStorage) logged in through the `#token=` link, with the calls list loaded. */
export async function openUi(
  context: BrowserContext,
  baseUrl: string,
  token: string,
  viewport = { width: 1280, height: 900 },
): Promise<Page> {
  const page = await context.newPage();
  await page.setViewportSize(viewport);
  page.on('pageerror', (err) => pageErrors.push(`${page.url()}: ${err.message}`));
  await page.goto(`${baseUrl}/#token=${token}`);
  await page.locator('#call-rows tr').first().waitFor();
  return page;
}

/** The row of one call. */
export function row(page: Page, callSid: string): Locator {
  return page.locator(`#call-${callSid}`);
}

/** Waits until the call's <audio> has played past `seconds` (from where it started). */
export async function waitForPlayback(
  page: Page,
  callSid: string,
  atLeast: number,
  timeout = 15_000,
): Promise<number> {
  const audio = row(page, callSid).locator('audio');
  await audio.waitFor({ timeout });
  await page.waitForFunction(
    ([sid, t]) => {
      const el = document.querySelector(`#call-${sid} audio`) as PageAudio | null;
      return el !== null && !el.paused && el.currentTime > (t as number);
    },
    [callSid, atLeast] as const,
    { timeout, polling: 50 },
  );
  return audio.evaluate((el: PageAudio) => el.currentTime);
}

/** Saves a PNG of the page (all of it, or with `fullPage: false` what the viewport shows). */
export async function screenshot(page: Page, name: string, fullPage = true): Promise<string> {
  await mkdir(SCREENSHOT_DIR, { recursive: true });
  const file = path.join(SCREENSHOT_DIR, `${name}.png`);
  await page.screenshot({ path: file, fullPage });
  return file;
}
