import { type Emulator, type EmulatorOptions, startEmulator } from '../../src/emulator/index.js';

export const API_KEY_SID = `SK${'b'.repeat(32)}`;
export const API_KEY_SECRET = 'emulator-test-key-secret';

export function start(options: EmulatorOptions = {}): Promise<Emulator> {
  return startEmulator({ port: 0, apiKeys: { [API_KEY_SID]: API_KEY_SECRET }, ...options });
}

export function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
}

export function accountUrl(emulator: Emulator, path: string): string {
  return `${emulator.url}/2010-04-01/Accounts/${emulator.accountSid}/${path}`;
}

/** GET (or another method) with the account's Basic credentials. */
export function api(emulator: Emulator, path: string, init: RequestInit = {}): Promise<Response> {
  const url = path.startsWith('/') ? `${emulator.url}${path}` : accountUrl(emulator, path);
  return fetch(url, {
    ...init,
    headers: { authorization: basic(emulator.accountSid, emulator.authToken), ...(init.headers ?? {}) },
  });
}

export async function control(emulator: Emulator, path: string, body?: unknown): Promise<Response> {
  return fetch(`${emulator.url}/__emulator/${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}
