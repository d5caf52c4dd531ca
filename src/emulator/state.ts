/**
 * The emulator's in-memory account: calls, recordings with their generated media, and how Twilio would
 * describe them. Nothing here knows about HTTP.
 */
import { createHash, type KeyObject } from 'node:crypto';
import { z } from 'zod';
import { createError } from '../errors.js';
import {
  ACCOUNT_SID_PATTERN,
  CALL_SID_PATTERN,
  isAccountSid,
  isCallSid,
  isRecordingSid,
  RECORDING_SID_PATTERN,
} from '../sid.js';
import { type GeneratedMp3, type GeneratedWav, generateMp3, generateWav, minMp3Bytes } from './audio.js';
import { type EncryptedMedia, encryptMedia, PUBLIC_KEY_SID_PATTERN, parsePublicKey } from './encryption.js';
import { invalid, invalidInput } from './invalid.js';

export type CallDirection = 'inbound' | 'outbound-api' | 'outbound-dial';

/**
 * Status a new recording starts in. `completed` is playable; `processing` serves 404 (Twilio 20404) for
 * media until `ready_after_ms` passes (forever without it); `deleted` behaves as if deleted upstream (the
 * call exists, the recording answers 404 and is not listed); `absent` creates the call with no recording.
 */
export type CreateStatus = 'completed' | 'processing' | 'deleted' | 'absent';

const callSid = z.string().refine(isCallSid, `must match ^${CALL_SID_PATTERN}$`);
const recordingSid = z.string().refine(isRecordingSid, `must match ^${RECORDING_SID_PATTERN}$`);
const accountSid = z.string().refine(isAccountSid, `must match ^${ACCOUNT_SID_PATTERN}$`);

/**
 * Body of `POST /__emulator/accounts` and argument of `Emulator.createAccount`: another account the REST
 * API serves. It is a subaccount of `parent_account_sid` (default: the main account); `null` makes an
 * independent account, reachable only with its own credentials. A parent may read its subaccounts'
 * resources with its own credentials (the subaccount's SID in the path); no account reads another's.
 */
export const createAccountSchema = z.strictObject({
  account_sid: accountSid.optional(),
  /** The account's auth token (Basic auth password, webhook signing key). Default: generated. */
  auth_token: z.string().min(1).max(128).optional(),
  parent_account_sid: accountSid.nullable().optional(),
  friendly_name: z.string().min(1).max(64).optional(),
});

export type CreateAccountInput = z.input<typeof createAccountSchema>;

export interface EmulatorAccount {
  sid: string;
  authToken: string;
  /** The owner account of a subaccount; `null` for a top-level account. */
  parentSid: string | null;
  friendlyName: string;
  created: Date;
}

/** What `createAccount` returns (and `POST /__emulator/accounts` answers). */
export interface CreatedAccount {
  account_sid: string;
  auth_token: string;
  parent_account_sid: string | null;
  friendly_name: string;
}

/**
 * Body of `POST /__emulator/recordings` and argument of `Emulator.createRecording`.
 *
 * Without `parent_call_sid`, the recording belongs to `call_sid` (created if unknown, generated if
 * omitted). With `parent_call_sid`, this is a `<Dial>`: `call_sid` is the child leg (created with
 * direction `outbound-dial` and `parent_call_sid` set), the parent call is created if unknown (direction
 * `inbound`), and the recording belongs to the PARENT call. A call that already exists gets one more
 * recording.
 */
export const createRecordingSchema = z
  .strictObject({
    /** The account (main, or one made with `POST /__emulator/accounts`) the call belongs to. @default main */
    account_sid: accountSid.optional(),
    call_sid: callSid.optional(),
    parent_call_sid: callSid.optional(),
    recording_sid: recordingSid.optional(),
    /** Exact MP3 size in bytes. */
    bytes: z.number().int().positive().max(2_000_000_000).optional(),
    /** Audio length in seconds (default 30 when `bytes` is also absent). */
    duration_s: z.number().positive().max(86_400).optional(),
    status: z.enum(['completed', 'processing', 'deleted', 'absent']).optional(),
    /** Same as `status: "absent"`. */
    no_recording: z.boolean().optional(),
    /** With `status: "processing"`: milliseconds until the recording completes. */
    ready_after_ms: z.number().int().nonnegative().optional(),
    from: z.string().min(1).max(64).optional(),
    to: z.string().min(1).max(64).optional(),
    /** Direction of the call that is not a `<Dial>` child. Default `inbound`. */
    direction: z.enum(['inbound', 'outbound-api']).optional(),
    /** ISO 8601 start of the call. Default: now minus the duration. */
    start_time: z.iso.datetime({ offset: true }).optional(),
    /**
     * A public key registered with `POST /__emulator/public-keys` (`CR…`): the MP3 is served encrypted as
     * Twilio's Voice Recording Encryption does, and the resource carries `encryption_details`.
     */
    encrypt_with: z
      .string()
      .regex(new RegExp(`^${PUBLIC_KEY_SID_PATTERN}$`), `must match ^${PUBLIC_KEY_SID_PATTERN}$`)
      .optional(),
    /**
     * 2 for a dual-channel recording (each leg on its own channel), which serves `RequestedChannels=2`;
     * a mono one answers that with Twilio's 400 code 16113. Default 1.
     */
    channels: z.union([z.literal(1), z.literal(2)]).optional(),
  })
  .refine((v) => v.bytes === undefined || v.duration_s === undefined, {
    message: 'give bytes or duration_s, not both',
    path: ['bytes'],
  })
  .refine((v) => v.parent_call_sid === undefined || v.parent_call_sid !== v.call_sid, {
    message: 'must differ from call_sid',
    path: ['parent_call_sid'],
  });

export type CreateRecordingInput = z.input<typeof createRecordingSchema>;

/** What `createRecording` returns (and `POST /__emulator/recordings` answers). */
export interface CreatedRecording {
  account_sid: string;
  /** The call named by the request: the child leg in a `<Dial>`. */
  call_sid: string;
  parent_call_sid: string | null;
  /** `null` when the call has no recording (`status: "absent"`). */
  recording_sid: string | null;
  /** The call that owns the recording: `parent_call_sid` in a `<Dial>`, else `call_sid`. */
  recording_call_sid: string | null;
  status: 'completed' | 'processing' | 'deleted' | 'absent';
  /** MP3 size in bytes (0 when absent). */
  size: number;
  /** Hex SHA-256 of the MP3 (`null` when absent). */
  sha256: string | null;
  duration_s: number;
  direction: CallDirection;
  from: string;
  to: string;
  /** ISO 8601 start of the call. */
  start_time: string;
  /** Twilio's `media_url` (no extension: MP3). */
  media_url: string | null;
  /** With `encrypt_with`: the details the resource carries, and the size of the encrypted MP3 (+16, its tag). */
  encryption_details?: EncryptedMedia['details'];
  encrypted_size?: number;
}

export interface CallEntry {
  sid: string;
  accountSid: string;
  parentCallSid: string | null;
  direction: CallDirection;
  from: string;
  to: string;
  startTime: Date;
  durationS: number;
  seq: number;
}

export interface RecordingEntry {
  sid: string;
  accountSid: string;
  callSid: string;
  source: string;
  startTime: Date;
  durationS: number;
  mp3: GeneratedMp3;
  /** The MP3 as served when the recording is encrypted (`encrypt_with`); `null` otherwise. */
  encrypted: EncryptedMedia | null;
  /** 1 (mono) or 2 (dual-channel: the mono `mp3` is the mix Twilio serves by default). */
  channels: 1 | 2;
  /** `processing` until `readyAt` (if any), then reported `completed`. */
  initialStatus: 'completed' | 'processing';
  readyAt: number | null;
  completedAt: Date;
  deleted: boolean;
  seq: number;
}

export type RecordingStatus = 'completed' | 'processing' | 'deleted';

const RENDITION_CACHE_ENTRIES = 4;

/** A rendition of a recording other than its mono MP3: the WAV, or a dual-channel file. */
export interface Rendition {
  format: 'mp3' | 'wav';
  channels: 1 | 2;
}

export class EmulatorState {
  readonly calls = new Map<string, CallEntry>();
  readonly recordings = new Map<string, RecordingEntry>();
  /** Public keys for Voice Recording Encryption (`POST /__emulator/public-keys`), by `CR…` SID. */
  /** Public keys registered for Voice Recording Encryption, by SID. */
  readonly publicKeys = new Map<string, KeyObject>();
  private readonly renditions = new Map<string, GeneratedWav | GeneratedMp3>();
  readonly accounts = new Map<string, EmulatorAccount>();
  private counter = 0;
  private seq = 0;

  constructor(
    readonly accountSid: string,
    private readonly baseUrl: () => string,
    authToken = '',
  ) {
    this.accounts.set(accountSid, {
      sid: accountSid,
      authToken,
      parentSid: null,
      friendlyName: 'Main account',
      created: new Date(),
    });
  }

  /** Registers a public key; resolves to its SID. Throws RECGATE_INVALID_REQUEST naming the bad field. */
  registerPublicKey(raw: unknown): string {
    const { sid, key } = parsePublicKey(raw);
    this.publicKeys.set(sid, key);
    return sid;
  }

  /** Adds an account; throws RECGATE_INVALID_REQUEST naming the bad field. */
  createAccount(raw: unknown): CreatedAccount {
    const parsed = createAccountSchema.safeParse(raw ?? {});
    if (!parsed.success) throw invalidInput(parsed.error.issues[0]!);
    const input = parsed.data;
    const parentSid = input.parent_account_sid === undefined ? this.accountSid : input.parent_account_sid;
    if (parentSid !== null) {
      const parent = this.accounts.get(parentSid);
      if (parent === undefined) invalid('parent_account_sid: no such account');
      // Twilio's subaccounts cannot have subaccounts of their own.
      if (parent.parentSid !== null) invalid('parent_account_sid: a subaccount cannot own subaccounts');
    }
    let sid = input.account_sid;
    if (sid !== undefined && this.accounts.has(sid)) invalid('account_sid: already exists');
    for (let n = this.accounts.size; sid === undefined; n++) {
      const candidate = `AC${hex32(`${this.accountSid}:account:${n}`)}`;
      if (!this.accounts.has(candidate)) sid = candidate;
    }
    const account: EmulatorAccount = {
      sid,
      authToken: input.auth_token ?? hex32(`${sid}:token`),
      parentSid,
      friendlyName: input.friendly_name ?? `Account ${sid.slice(-6)}`,
      created: new Date(),
    };
    this.accounts.set(sid, account);
    return {
      account_sid: sid,
      auth_token: account.authToken,
      parent_account_sid: parentSid,
      friendly_name: account.friendlyName,
    };
  }

  /**
   * Whether credentials of account `principal` may read account `target`'s resources: its own, and, for a
   * top-level account, its subaccounts'.
   */
  mayAccess(principal: string, target: string): boolean {
    if (principal === target) return this.accounts.has(target);
    return this.accounts.get(target)?.parentSid === principal;
  }

  /** The call, if it belongs to `account`. */
  callIn(account: string, sid: string): CallEntry | undefined {
    const call = this.calls.get(sid);
    return call?.accountSid === account ? call : undefined;
  }

  /** A deterministic SID: the n-th SID an emulator of this account generates is always the same. */
  nextSid(prefix: 'CA' | 'RE'): string {
    for (;;) {
      this.counter++;
      const sid = `${prefix}${hex32(`${this.accountSid}:${prefix}:${this.counter}`)}`;
      if (!this.calls.has(sid) && !this.recordings.has(sid)) return sid;
    }
  }

  status(recording: RecordingEntry, now = Date.now()): RecordingStatus {
    if (recording.deleted) return 'deleted';
    if (recording.initialStatus === 'processing' && (recording.readyAt === null || now < recording.readyAt)) {
      return 'processing';
    }
    return 'completed';
  }

  /**
   * The recording as Twilio's API still shows it: `undefined` once deleted, and, with `account`, unless it
   * belongs to that account.
   */
  visibleRecording(sid: string, account?: string): RecordingEntry | undefined {
    const recording = this.recordings.get(sid);
    if (account !== undefined && recording?.accountSid !== account) return undefined;
    return recording && !recording.deleted ? recording : undefined;
  }

  create(raw: unknown): CreatedRecording {
    const parsed = createRecordingSchema.safeParse(raw ?? {});
    if (!parsed.success) throw invalidInput(parsed.error.issues[0]!);
    const input = parsed.data;
    const account = input.account_sid ?? this.accountSid;
    if (!this.accounts.has(account)) invalid('account_sid: no such account (create it first)');
    for (const [field, sid] of [
      ['call_sid', input.call_sid],
      ['parent_call_sid', input.parent_call_sid],
    ] as const) {
      const existing = sid === undefined ? undefined : this.calls.get(sid);
      if (existing !== undefined && existing.accountSid !== account) {
        invalid(`${field}: the call belongs to another account`);
      }
    }
    const status: CreateStatus = input.no_recording ? 'absent' : (input.status ?? 'completed');
    if (input.recording_sid !== undefined && this.recordings.has(input.recording_sid)) {
      throw createError('RECGATE_INVALID_REQUEST', { message: 'recording_sid: already exists' });
    }
    const publicKey = input.encrypt_with === undefined ? undefined : this.publicKeys.get(input.encrypt_with);
    if (input.encrypt_with !== undefined && publicKey === undefined) {
      throw createError('RECGATE_INVALID_REQUEST', { message: 'encrypt_with: no such public key' });
    }
    if (input.ready_after_ms !== undefined && status !== 'processing') {
      throw createError('RECGATE_INVALID_REQUEST', { message: 'ready_after_ms: needs status "processing"' });
    }

    const recordingSid = status === 'absent' ? null : (input.recording_sid ?? this.nextSid('RE'));
    const seed = recordingSid ?? 'absent';
    if (input.bytes !== undefined && input.bytes < minMp3Bytes(seed)) {
      throw createError('RECGATE_INVALID_REQUEST', {
        message: `bytes: must be at least ${minMp3Bytes(seed)}`,
      });
    }
    const mp3 =
      recordingSid === null
        ? null
        : generateMp3({
            seed: recordingSid,
            ...(input.bytes !== undefined ? { bytes: input.bytes } : { durationS: input.duration_s ?? 30 }),
          });
    const durationS = Math.max(1, Math.round(mp3?.durationS ?? input.duration_s ?? 30));
    const startTime = input.start_time
      ? new Date(input.start_time)
      : new Date(Math.floor(Date.now() / 1000 - durationS - 5) * 1000);

    const ownSid = input.call_sid ?? this.nextSid('CA');
    const parentSid = input.parent_call_sid ?? null;
    if (parentSid !== null && !this.calls.has(parentSid)) {
      this.calls.set(parentSid, {
        sid: parentSid,
        accountSid: account,
        parentCallSid: null,
        direction: 'inbound',
        from: input.from ?? phoneNumber(`${parentSid}:from`),
        to: phoneNumber(`${parentSid}:to`),
        startTime,
        durationS: durationS + 4,
        seq: this.seq++,
      });
    }
    let call = this.calls.get(ownSid);
    if (!call) {
      const parent = parentSid === null ? undefined : this.calls.get(parentSid);
      call = {
        sid: ownSid,
        accountSid: account,
        parentCallSid: parentSid,
        direction: parentSid !== null ? 'outbound-dial' : (input.direction ?? 'inbound'),
        // A dialled leg rings from the caller's number to the agent's.
        from: parent ? parent.to : (input.from ?? phoneNumber(`${ownSid}:from`)),
        to: input.to ?? phoneNumber(`${ownSid}:to`),
        startTime: parent ? new Date(startTime.getTime() + 2000) : startTime,
        durationS,
        seq: this.seq++,
      };
      this.calls.set(ownSid, call);
    }

    const ownerSid = parentSid ?? ownSid;
    const encrypted =
      mp3 === null || publicKey === undefined ? null : encryptMedia(mp3.data, input.encrypt_with!, publicKey);
    if (recordingSid !== null && mp3 !== null) {
      const readyAt =
        status === 'processing' && input.ready_after_ms !== undefined
          ? Date.now() + input.ready_after_ms
          : null;
      const completedAt =
        readyAt !== null ? new Date(readyAt) : new Date(startTime.getTime() + (durationS + 2) * 1000);
      this.recordings.set(recordingSid, {
        sid: recordingSid,
        accountSid: account,
        callSid: ownerSid,
        source: parentSid !== null ? 'DialVerb' : 'RecordVerb',
        startTime: parentSid !== null ? new Date(startTime.getTime() + 2000) : startTime,
        durationS,
        mp3,
        encrypted,
        channels: input.channels ?? 1,
        initialStatus: status === 'processing' ? 'processing' : 'completed',
        readyAt,
        completedAt,
        deleted: status === 'deleted',
        seq: this.seq++,
      });
    }
    return {
      account_sid: account,
      call_sid: ownSid,
      parent_call_sid: parentSid,
      recording_sid: recordingSid,
      recording_call_sid: recordingSid === null ? null : ownerSid,
      status,
      size: mp3?.data.length ?? 0,
      sha256: mp3?.sha256 ?? null,
      duration_s: durationS,
      direction: call.direction,
      from: call.from,
      to: call.to,
      start_time: call.startTime.toISOString(),
      media_url:
        recordingSid === null ? null : `${this.baseUrl()}${this.recordingPath(recordingSid, account)}`,
      ...(encrypted === null
        ? {}
        : { encryption_details: encrypted.details, encrypted_size: encrypted.data.length }),
    };
  }

  /** Twilio's DELETE: `true` if there was a recording to delete. */
  delete(sid: string): boolean {
    const recording = this.visibleRecording(sid);
    if (!recording) return false;
    recording.deleted = true;
    for (const key of this.renditions.keys()) if (key.startsWith(`${sid}:`)) this.renditions.delete(key);
    return true;
  }

  /**
   * The media of a rendition: the mono MP3 as created (ciphertext and tag when `encrypt_with` encrypted it), else (the WAV, the dual-channel MP3 of the same
   * size) generated on first use; a few are kept, since they are large and rarely asked for. The caller
   * checks that a dual-channel rendition exists (`recording.channels`).
   */
  media(recording: RecordingEntry, rendition: Rendition): { data: Buffer; sha256: string } {
    if (rendition.format === 'mp3' && rendition.channels === 1) return recording.encrypted ?? recording.mp3;
    const key = `${recording.sid}:${rendition.format}:${rendition.channels}`;
    let media = this.renditions.get(key);
    if (media) {
      this.renditions.delete(key);
    } else if (rendition.format === 'wav') {
      media = generateWav({
        seed: recording.sid,
        durationS: recording.mp3.durationS,
        channels: rendition.channels,
      });
    } else {
      media = generateMp3({ seed: recording.sid, bytes: recording.mp3.data.length, channels: 2 });
    }
    this.renditions.set(key, media);
    while (this.renditions.size > RENDITION_CACHE_ENTRIES) {
      this.renditions.delete(this.renditions.keys().next().value!);
    }
    return media;
  }

  /** Newest first, as Twilio lists; with `account`, that account's only. */
  listRecordings(callSid?: string, account?: string): RecordingEntry[] {
    return [...this.recordings.values()]
      .filter(
        (r) =>
          !r.deleted &&
          (callSid === undefined || r.callSid === callSid) &&
          (account === undefined || r.accountSid === account),
      )
      .sort((a, b) => b.startTime.getTime() - a.startTime.getTime() || b.seq - a.seq);
  }

  listCalls(account?: string): CallEntry[] {
    return [...this.calls.values()]
      .filter((c) => account === undefined || c.accountSid === account)
      .sort((a, b) => b.startTime.getTime() - a.startTime.getTime() || b.seq - a.seq);
  }

  accountPath(account = this.accountSid): string {
    return `/2010-04-01/Accounts/${account}`;
  }

  recordingPath(sid: string, account = this.accountSid): string {
    return `${this.accountPath(account)}/Recordings/${sid}`;
  }

  /** Twilio's Account resource (a parent reading its subaccount sees the subaccount's auth token too). */
  accountJson(account: EmulatorAccount): Record<string, unknown> {
    const path = this.accountPath(account.sid);
    return {
      sid: account.sid,
      owner_account_sid: account.parentSid ?? account.sid,
      friendly_name: account.friendlyName,
      status: 'active',
      type: 'Full',
      auth_token: account.authToken,
      date_created: rfc2822(account.created),
      date_updated: rfc2822(account.created),
      uri: `${path}.json`,
      subresource_uris: {
        calls: `${path}/Calls.json`,
        recordings: `${path}/Recordings.json`,
      },
    };
  }

  callJson(call: CallEntry): Record<string, unknown> {
    const base = `${this.accountPath(call.accountSid)}/Calls/${call.sid}`;
    const end = new Date(call.startTime.getTime() + call.durationS * 1000);
    return {
      sid: call.sid,
      date_created: rfc2822(new Date(call.startTime.getTime() - 1000)),
      date_updated: rfc2822(end),
      parent_call_sid: call.parentCallSid,
      account_sid: call.accountSid,
      to: call.to,
      to_formatted: formatPhone(call.to),
      from: call.from,
      from_formatted: formatPhone(call.from),
      phone_number_sid: call.direction === 'inbound' ? `PN${hex32(`${call.to}:pn`)}` : null,
      status: 'completed',
      start_time: rfc2822(call.startTime),
      end_time: rfc2822(end),
      duration: String(call.durationS),
      price: (-0.0085 * Math.ceil(call.durationS / 60)).toFixed(5),
      price_unit: 'USD',
      direction: call.direction,
      answered_by: null,
      api_version: '2010-04-01',
      forwarded_from: null,
      group_sid: null,
      caller_name: null,
      queue_time: '0',
      trunk_sid: null,
      uri: `${base}.json`,
      subresource_uris: {
        feedback: `${base}/Feedback.json`,
        notifications: `${base}/Notifications.json`,
        recordings: `${base}/Recordings.json`,
        streams: `${base}/Streams.json`,
        payments: `${base}/Payments.json`,
        siprec: `${base}/Siprec.json`,
        events: `${base}/Events.json`,
        feedback_summaries: `${this.accountPath(call.accountSid)}/Calls/FeedbackSummary.json`,
        user_defined_message_subscriptions: `${base}/UserDefinedMessageSubscriptions.json`,
        user_defined_messages: `${base}/UserDefinedMessages.json`,
        transcriptions: `${base}/Transcriptions.json`,
      },
    };
  }

  recordingJson(recording: RecordingEntry): Record<string, unknown> {
    const path = this.recordingPath(recording.sid, recording.accountSid);
    const status = this.status(recording);
    const done = status === 'completed';
    return {
      account_sid: recording.accountSid,
      api_version: '2010-04-01',
      call_sid: recording.callSid,
      conference_sid: null,
      date_created: rfc2822(recording.startTime),
      date_updated: rfc2822(done ? recording.completedAt : recording.startTime),
      start_time: rfc2822(recording.startTime),
      // Twilio reports -1 until a recording's length is known.
      duration: done ? String(recording.durationS) : '-1',
      sid: recording.sid,
      price: done ? (-0.0025 * Math.ceil(recording.durationS / 60)).toFixed(4) : null,
      price_unit: 'USD',
      status,
      channels: recording.channels,
      source: recording.source,
      error_code: null,
      encryption_details: recording.encrypted?.details ?? null,
      media_url: `${this.baseUrl()}${path}`,
      uri: `${path}.json`,
      subresource_uris: {
        add_on_results: `${path}/AddOnResults.json`,
        transcriptions: `${path}/Transcriptions.json`,
      },
    };
  }

  /** Forgets the cached WAV renditions; calls and recordings stay. */
  dropCaches(): void {
    this.renditions.clear();
  }
}

/** 32 lower-case hex digits derived from a string. */
export function hex32(input: string): string {
  return createHash('sha256').update(input).digest('hex').slice(0, 32);
}

/** Twilio's date format: `Tue, 31 Aug 2010 20:36:28 +0000`. */
export function rfc2822(date: Date): string {
  return date.toUTCString().replace(/GMT$/, '+0000');
}

/** A fictional North American number (555-01xx is reserved for fiction). */
function phoneNumber(seed: string): string {
  const digits = Number.parseInt(hex32(seed).slice(0, 8), 16);
  const area = 200 + (digits % 800);
  const line = String(100 + (Math.floor(digits / 800) % 100)).padStart(4, '0');
  return `+1${area}555${line}`;
}

function formatPhone(number: string): string {
  const m = /^\+1(\d{3})(\d{3})(\d{4})$/.exec(number);
  return m ? `(${m[1]}) ${m[2]}-${m[3]}` : number;
}
