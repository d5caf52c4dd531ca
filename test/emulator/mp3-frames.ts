/**
 * A small MPEG audio frame-header walker for tests: skips an ID3v2 tag, then requires a valid frame
 * header at every frame boundary up to the exact end of the file.
 */

const BITRATES_V2_L3 = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 0];
const BITRATES_V1_L3 = [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 0];
const SAMPLE_RATES: Record<number, number[]> = {
  3: [44100, 48000, 32000],
  2: [22050, 24000, 16000],
  0: [11025, 12000, 8000],
};

export interface FrameWalk {
  tagBytes: number;
  frames: number;
  sampleRate: number;
  bitrateKbps: number;
  channelMode: number;
  /** main_data_begin of the first frame. */
  firstMainDataBegin: number;
  /** Byte offset of every frame, in order. */
  offsets: number[];
}

export function walkMp3(data: Buffer): FrameWalk {
  let offset = 0;
  if (data.subarray(0, 3).toString('latin1') === 'ID3') {
    const size =
      ((data[6]! & 0x7f) << 21) | ((data[7]! & 0x7f) << 14) | ((data[8]! & 0x7f) << 7) | (data[9]! & 0x7f);
    offset = 10 + size;
  }
  const tagBytes = offset;
  let frames = 0;
  let sampleRate = 0;
  let bitrateKbps = 0;
  let channelMode = 0;
  let firstMainDataBegin = -1;
  const offsets: number[] = [];
  while (offset < data.length) {
    if (offset + 4 > data.length) throw new Error(`truncated frame header at ${offset}`);
    const header = data.readUInt32BE(offset);
    if (header >>> 21 !== 0x7ff) throw new Error(`no frame sync at ${offset}`);
    const version = (header >>> 19) & 3;
    const layer = (header >>> 17) & 3;
    const protection = (header >>> 16) & 1;
    const bitrateIndex = (header >>> 12) & 15;
    const rateIndex = (header >>> 10) & 3;
    const padding = (header >>> 9) & 1;
    channelMode = (header >>> 6) & 3;
    if (version === 1 || layer !== 1 || bitrateIndex === 0 || bitrateIndex === 15 || rateIndex === 3) {
      throw new Error(`invalid Layer III header ${header.toString(16)} at ${offset}`);
    }
    sampleRate = SAMPLE_RATES[version]![rateIndex]!;
    bitrateKbps = (version === 3 ? BITRATES_V1_L3 : BITRATES_V2_L3)[bitrateIndex]!;
    const coefficient = version === 3 ? 144 : 72;
    const size = Math.floor((coefficient * bitrateKbps * 1000) / sampleRate) + padding;
    if (firstMainDataBegin < 0) {
      const side = offset + 4 + (protection ? 0 : 2);
      firstMainDataBegin = version === 3 ? (data[side]! << 1) | (data[side + 1]! >> 7) : data[side]!;
    }
    if (offset + size > data.length) throw new Error(`frame at ${offset} runs past the end`);
    offsets.push(offset);
    offset += size;
    frames++;
  }
  return { tagBytes, frames, sampleRate, bitrateKbps, channelMode, firstMainDataBegin, offsets };
}
