/**
 * The emulator's in-memory account: calls, recordings with their generated media, and how Twilio would
 * describe them. Nothing here knows about HTTP.
 */
import { createHash, type KeyObject } from 'node:crypto';
import { z } from 'zod';
import { createError } from '../errors.js';
import { CALL_SID_PATTERN, isCallSid, isRecordingSid, RECORDING_SID_PATTERN } from '../sid.js';
import { type GeneratedMp3, type GeneratedWav, generateMp3, generateWav, minMp3Bytes } from './audio.js';
import { type EncryptedMedia, encryptMedia, PUBLIC_KEY_SID_PATTERN } from './encryption.js';

export type CallDirection = 'inbound' | 'outbound-api' | 'outbound-dial';

/**
 * Status a new recording starts in. `completed` is playable; `processing` serves 404 (Twilio 20404) for
 * media until `ready_after_ms` passes (forever without it); `deleted` behaves as if deleted upstream (the
 * call exists, the recording answers 404 and is not listed); `absent` creates the call with no recording.
 */
export type CreateStatus = 'completed' | 'processing' | 'deleted' | 'absent';

const callSid = z.string().refine(isCallSid, `must match ^${CALL_SID_PATTERN}$`);
const recordingSid = z.string().refine(isRecordingSid, `must match ^${RECORDING_SID_PATTERN}$`);

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
  callSid: string;
  source: string;
  startTime: Date;
  durationS: number;
  mp3: GeneratedMp3;
  /** The MP3 as served when the recording is encrypted (`encrypt_with`); `null` otherwise. */
  encrypted: EncryptedMedia | null;
  /** `processing` until `readyAt` (if any), then reported `completed`. */
  initialStatus: 'completed' | 'processing';
  readyAt: number | null;
  completedAt: Date;
  deleted: boolean;
  seq: number;
}

export type RecordingStatus = 'completed' | 'processing' | 'deleted';

const WAV_CACHE_ENTRIES = 4;

export class EmulatorState {
  readonly calls = new Map<string, CallEntry>();
  readonly recordings = new Map<string, RecordingEntry>();
  /** Public keys for Voice Recording Encryption (`POST /__emulator/public-keys`), by `CR…` SID. */
  readonly publicKeys = new Map<string, KeyObject>();
  private readonly wavCache = new Map<string, GeneratedWav>();
  private counter = 0;
  private seq = 0;

  constructor(
    readonly accountSid: string,
    private readonly baseUrl: () => string,
  ) {}

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

  /** The recording as Twilio's API still shows it: `undefined` once deleted. */
  visibleRecording(sid: string): RecordingEntry | undefined {
    const recording = this.recordings.get(sid);
    return recording && !recording.deleted ? recording : undefined;
  }

  create(raw: unknown): CreatedRecording {
    const parsed = createRecordingSchema.safeParse(raw ?? {});
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      const field = issue.path.length > 0 ? issue.path.join('.') : 'body';
      throw createError('RECGATE_INVALID_REQUEST', { message: `${field}: ${issue.message}` });
    }
    const input = parsed.data;
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
        callSid: ownerSid,
        source: parentSid !== null ? 'DialVerb' : 'RecordVerb',
        startTime: parentSid !== null ? new Date(startTime.getTime() + 2000) : startTime,
        durationS,
        mp3,
        encrypted,
        initialStatus: status === 'processing' ? 'processing' : 'completed',
        readyAt,
        completedAt,
        deleted: status === 'deleted',
        seq: this.seq++,
      });
    }
    return {
      account_sid: this.accountSid,
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
      media_url: recordingSid === null ? null : `${this.baseUrl()}${this.recordingPath(recordingSid)}`,
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
    this.wavCache.delete(sid);
    return true;
  }

  /** The WAV rendition, generated on first use; a few are kept, since WAVs are large and rarely asked for. */
  wav(recording: RecordingEntry): GeneratedWav {
    let wav = this.wavCache.get(recording.sid);
    if (wav) {
      this.wavCache.delete(recording.sid);
    } else {
      wav = generateWav({ seed: recording.sid, durationS: recording.mp3.durationS });
    }
    this.wavCache.set(recording.sid, wav);
    while (this.wavCache.size > WAV_CACHE_ENTRIES) this.wavCache.delete(this.wavCache.keys().next().value!);
    return wav;
  }

  /** Newest first, as Twilio lists. */
  listRecordings(callSid?: string): RecordingEntry[] {
    return [...this.recordings.values()]
      .filter((r) => !r.deleted && (callSid === undefined || r.callSid === callSid))
      .sort((a, b) => b.startTime.getTime() - a.startTime.getTime() || b.seq - a.seq);
  }

  listCalls(): CallEntry[] {
    return [...this.calls.values()].sort(
      (a, b) => b.startTime.getTime() - a.startTime.getTime() || b.seq - a.seq,
    );
  }

  accountPath(): string {
    return `/2010-04-01/Accounts/${this.accountSid}`;
  }

  recordingPath(sid: string): string {
    return `${this.accountPath()}/Recordings/${sid}`;
  }

  callJson(call: CallEntry): Record<string, unknown> {
    const base = `${this.accountPath()}/Calls/${call.sid}`;
    const end = new Date(call.startTime.getTime() + call.durationS * 1000);
    return {
      sid: call.sid,
      date_created: rfc2822(new Date(call.startTime.getTime() - 1000)),
      date_updated: rfc2822(end),
      parent_call_sid: call.parentCallSid,
      account_sid: this.accountSid,
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
        feedback_summaries: `${this.accountPath()}/Calls/FeedbackSummary.json`,
        user_defined_message_subscriptions: `${base}/UserDefinedMessageSubscriptions.json`,
        user_defined_messages: `${base}/UserDefinedMessages.json`,
        transcriptions: `${base}/Transcriptions.json`,
      },
    };
  }

  recordingJson(recording: RecordingEntry): Record<string, unknown> {
    const path = this.recordingPath(recording.sid);
    const status = this.status(recording);
    const done = status === 'completed';
    return {
      account_sid: this.accountSid,
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
      channels: 1,
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
    this.wavCache.clear();
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
