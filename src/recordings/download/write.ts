/**
 * Step 4: the generation this download writes. A {@link PartialFile} owns it: it starts one (from a leftover
 * of an earlier holder when that can be resumed, else empty), receives bodies into it, holding the first
 * bytes back until they are known to be audio, and commits it under the final name, fenced by the lock.
 *
 * Nothing unchecked reaches readers: the first bytes are published (the frontier moves, `open()` resolves)
 * only once they frame as MP3 or WAV; a body that ends early is never committed, with or without a size
 * (without one, only a body that ends on a frame boundary counts as complete); and a writer that lost its
 * lock moves no shared name.
 */
import { createError, isRecgateError, type RecgateError, storageError } from '../../errors.js';
import {
  type ContentTypeVerdict,
  declaredTypeConflict,
  FrameWalker,
  MediaSniffer,
  type SniffResult,
} from '../media-check.js';
import type { FinalInfo, PartialWriter } from '../store/store.js';
import { type DownloadContext, identityOf } from './context.js';
import type { Exchange, Transfer } from './fetch.js';

/** A body broke off or ended early: worth another exchange, resuming where it stopped when possible. */
export class BodyBroke extends Error {}

/** The generation's bytes cannot be trusted or used: remove it (`error` is what readers and callers see). */
export class Unusable extends Error {
  readonly error: RecgateError;

  constructor(error: RecgateError) {
    super(error.message, { cause: error });
    this.error = error;
  }
}

export class PartialFile {
  readonly #ctx: DownloadContext;
  /** The fencing check: resolves only while the flight still holds the lock. */
  readonly #fence: () => Promise<void>;
  #writer: PartialWriter | undefined;

  constructor(ctx: DownloadContext, fence: () => Promise<void>) {
    this.#ctx = ctx;
    this.#fence = fence;
  }

  get writer(): PartialWriter | undefined {
    return this.#writer;
  }

  /** Every byte the upstream announced is written. */
  get complete(): boolean {
    const w = this.#writer;
    return w !== undefined && w.meta.size !== null && w.length === w.meta.size;
  }

  /** Whether a later holder could resume what is written (it knows the size and validators). */
  get resumable(): boolean {
    const meta = this.#writer?.meta;
    return meta?.acceptsRanges === true && meta.etag !== null && meta.size !== null;
  }

  /** The next exchange fetches the whole recording into a new generation, whatever is written. */
  restartFromZero(): void {
    this.#writer = undefined;
  }

  /**
   * Continues what an earlier holder of this boot left of this recording: its first published bytes are
   * copied into a new generation, which the next exchange resumes (or which is complete already). Does
   * nothing when there is nothing usable.
   */
  async resumeLeftover(): Promise<void> {
    const { store, ref, flight } = this.#ctx;
    const id = flight.id;
    const meta = await store.readMeta(id);
    if (meta === undefined || meta.bootId !== store.bootId || meta.recordingSid !== ref.recordingSid) return;
    const frontier = await store.readFrontier(id, meta.fileId);
    if (frontier === undefined || frontier === 0 || meta.size === null) return;
    const complete = frontier === meta.size;
    if (!complete && !(meta.acceptsRanges && meta.etag !== null)) return;
    await this.#fence();
    const { fileId: _f, bootId: _b, ...input } = meta;
    const writer = await store.beginPartial(id, input, { fileId: meta.fileId, length: frontier });
    this.#adopt(writer);
    if (complete && writer.length === meta.size) {
      this.#ctx.event({ event: 'download_resumed', offset: writer.length }, 'Found the download complete');
    }
  }

  /**
   * Writes the exchange's body: into the generation being written for a resumption, else into a new one.
   * Throws {@link BodyBroke} when the body broke off or ended early, {@link Unusable} when its bytes must
   * not be kept, RecgateError for storage failures and aborts.
   */
  async receive(exchange: Exchange, signal: AbortSignal, transfer: Transfer): Promise<void> {
    try {
      await this.#receive(exchange, signal, transfer);
    } finally {
      // Frees the connection whatever ended the body, also a failure before its first byte was read (no
      // room for the generation, a lost lock): an unread body would hold the connection, and the upstream
      // client's close() waits for it. A no-op for a body read to its end.
      exchange.response.body.destroy();
    }
  }

  async #receive(exchange: Exchange, signal: AbortSignal, transfer: Transfer): Promise<void> {
    const ctx = this.#ctx;
    const { response } = exchange;
    let writer = this.#writer;
    if (exchange.kind === 'resume' && writer !== undefined) {
      ctx.event({ event: 'download_resumed', offset: exchange.offset }, 'Resuming the download');
    } else {
      if (writer !== undefined) {
        ctx.log.info(
          { event: 'download_restarted', offset: writer.length },
          'The upstream did not resume; restarting',
        );
      }
      // A writer that lost its lock must not move the pointer other processes follow.
      await this.#fence();
      writer = await ctx.store.beginPartial(ctx.flight.id, {
        recordingSid: ctx.ref.recordingSid,
        size: response.totalSize,
        etag: response.etag,
        lastModified: response.lastModified,
        acceptsRanges: response.acceptsRanges,
        startedAt: new Date().toISOString(),
        ...(response.encryption === undefined ? {} : { encryption: response.encryption }),
      });
      // Before readers hear of the generation, so that the block map's first claim says whether an early
      // slice is coming (see slice-run.ts).
      await ctx.seekAhead.generationStarted(writer.meta);
      this.#adopt(writer);
    }
    const size = writer.meta.size;
    // Bytes of a resumed generation were checked before they were published; a new one is checked now.
    // Ciphertext kept encrypted frames as nothing: its GCM tag, checked before its last bytes flow, proves
    // both that it is Twilio's recording and that it is whole.
    const cipher = writer.meta.encryption !== undefined;
    const sniffer = exchange.kind === 'resume' || cipher ? undefined : new MediaSniffer();
    if (sniffer === undefined && size !== null) ctx.flight.setIdentity(identityOf(writer.meta, size));
    const walker = size === null && !cipher ? new FrameWalker() : undefined;
    const body = new Body(ctx, writer, sniffer, exchange.declared, walker, transfer);
    try {
      for await (const chunk of response.body as AsyncIterable<Buffer>) {
        if (size !== null && body.length + chunk.byteLength > size) {
          throw new Unusable(
            createError('RECGATE_UPSTREAM_UNAVAILABLE', {
              cause: new Error(`upstream sent more than the ${size} bytes it announced`),
            }),
          );
        }
        await body.push(chunk);
      }
    } catch (err) {
      if (signal.aborted || err instanceof Unusable || isStorage(err)) throw err;
      throw new BodyBroke('the body broke off', { cause: err });
    }
    await body.end();
    if (size !== null && writer.length !== size) {
      throw new BodyBroke(`upstream body ended at ${writer.length} of ${size} bytes`);
    }
  }

  /** Commits the generation under the final name; the fence runs right before the rename. */
  async commit(): Promise<FinalInfo> {
    const { flight, ref, seekAhead } = this.#ctx;
    const writer = this.#writer!;
    // Slices of this process stop writing before the rename (those of others are waited for by the store).
    await seekAhead.stop();
    const size = writer.meta.size ?? writer.length;
    if (flight.identity === undefined) flight.setIdentity(identityOf(writer.meta, size));
    const final = await writer.commit({
      expectedSize: size,
      mtime: flight.identity!.lastModified,
      identity: {
        recordingSid: ref.recordingSid,
        etag: writer.meta.etag,
        lastModified: writer.meta.lastModified,
        ...(writer.meta.encryption === undefined ? {} : { encryption: writer.meta.encryption }),
      },
      fence: this.#fence,
    });
    flight.complete(final, writer);
    return final;
  }

  /** Removes the generation (it cannot be trusted, or nobody could resume it); only while the lock holds. */
  async discard(): Promise<void> {
    await this.#fence();
    await this.#ctx.store.discardPartial(this.#ctx.flight.id);
  }

  #adopt(writer: PartialWriter): void {
    this.#writer = writer;
    // The flight closes the writer once its readers are done with it, even after a newer generation.
    this.#ctx.flight.own(writer);
    this.#ctx.flight.adopt(writer, writer.length, writer.meta);
  }
}

/** One body on its way to disk: the first bytes held back until the sniffer has seen enough of them. */
class Body {
  readonly #ctx: DownloadContext;
  readonly #writer: PartialWriter;
  #sniffer: MediaSniffer | undefined;
  /** What the Content-Type said, which the bytes must agree with. */
  readonly #declared: ContentTypeVerdict;
  readonly #walker: FrameWalker | undefined;
  readonly #transfer: Transfer;
  #held: Buffer[] = [];
  #heldBytes = 0;

  constructor(
    ctx: DownloadContext,
    writer: PartialWriter,
    sniffer: MediaSniffer | undefined,
    declared: ContentTypeVerdict,
    walker: FrameWalker | undefined,
    transfer: Transfer,
  ) {
    this.#ctx = ctx;
    this.#writer = writer;
    this.#sniffer = sniffer;
    this.#declared = declared;
    this.#walker = walker;
    this.#transfer = transfer;
  }

  /** Bytes of the recording received so far, written or held back. */
  get length(): number {
    return this.#writer.length + this.#heldBytes;
  }

  async push(chunk: Buffer): Promise<void> {
    this.#transfer.bytes += chunk.byteLength;
    this.#walker?.push(chunk);
    const sniffer = this.#sniffer;
    if (sniffer === undefined) {
      await this.#append(chunk);
      return;
    }
    this.#held.push(chunk);
    this.#heldBytes += chunk.byteLength;
    this.#judge(sniffer.push(chunk));
    if (this.#sniffer === undefined) await this.#release();
  }

  /** The body ended cleanly: judge what the sniffer still holds, and whether a body of unknown size is whole. */
  async end(): Promise<void> {
    if (this.#sniffer !== undefined) {
      this.#judge(this.#sniffer.end());
      await this.#release();
    }
    const framing = this.#walker?.end();
    if (framing?.kind === 'truncated') {
      throw new BodyBroke(`a body of unknown length was cut short: ${framing.reason}`);
    }
  }

  #judge(verdict: SniffResult): void {
    if (verdict.kind === 'need-more') return;
    const why =
      verdict.kind === 'bad' ? verdict.reason : declaredTypeConflict(this.#declared, verdict.format);
    if (why !== null) {
      throw new Unusable(
        createError('RECGATE_UPSTREAM_BAD_MEDIA', {
          cause: new Error(`the body is not a recording: ${why}`),
        }),
      );
    }
    this.#sniffer = undefined;
  }

  async #release(): Promise<void> {
    const held = this.#held;
    this.#held = [];
    this.#heldBytes = 0;
    for (const chunk of held) await this.#append(chunk);
    const { flight } = this.#ctx;
    const size = this.#writer.meta.size;
    if (size !== null) flight.setIdentity(identityOf(this.#writer.meta, size));
  }

  async #append(chunk: Buffer): Promise<void> {
    await this.#writer.append(chunk).catch((err: unknown) => {
      throw storageError(err);
    });
    this.#ctx.flight.advance(this.#writer.length, chunk);
  }
}

function isStorage(err: unknown): boolean {
  return isRecgateError(err) && (err.code === 'RECGATE_STORAGE_FULL' || err.code === 'RECGATE_STORAGE_ERROR');
}
