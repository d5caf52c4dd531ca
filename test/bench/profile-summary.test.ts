import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { summarizeAllocations, summarizeProfile } from '../../bench/lib/profile-summary.js';

const frame = (functionName: string, file: string, line: number) => ({
  functionName,
  url: `file:///work/app/${file}`,
  lineNumber: line - 1,
});

describe('profile summaries (bench/profile.ts)', () => {
  it('a CPU profile: self and inclusive shares, a recursive function counted once per sample', () => {
    // root → handler → serve (→ serve again, recursion) and root → (idle)
    const profile = {
      nodes: [
        { id: 1, callFrame: frame('(root)', '', 0), children: [2, 5] },
        { id: 2, callFrame: frame('handler', 'dist/http/route.js', 10), children: [3] },
        { id: 3, callFrame: frame('serve', 'dist/serving/serve.js', 29), children: [4] },
        { id: 4, callFrame: frame('serve', 'dist/serving/serve.js', 29) },
        { id: 5, callFrame: frame('(idle)', '', 0) },
      ],
      samples: [2, 3, 4, 4, 5],
      timeDeltas: [100, 100, 100, 100, 600],
    };
    const text = summarizeProfile(profile);
    assert.match(text, /^0\.0 s sampled/);
    const self = text.split('-- inclusive')[0]!;
    assert.match(self, / 60\.0%\s+\(idle\)/);
    assert.match(self, / 30\.0%\s+serve dist\/serving\/serve\.js:29/);
    assert.match(self, / 10\.0%\s+handler dist\/http\/route\.js:10/);
    const inclusive = text.split('-- inclusive')[1]!;
    assert.match(inclusive, / 40\.0%\s+handler dist\/http\/route\.js:10/);
    assert.match(inclusive, / 30\.0%\s+serve dist\/serving\/serve\.js:29/, 'not 50%: recursion counted once');
  });

  it('an allocation profile: bytes per request, self and inclusive', () => {
    const profile = {
      head: {
        callFrame: frame('(root)', '', 0),
        selfSize: 0,
        children: [
          {
            callFrame: frame('handler', 'src/http/route.ts', 10),
            selfSize: 4000,
            children: [
              { callFrame: frame('serve', 'src/serving/serve.ts', 29), selfSize: 6000, children: [] },
            ],
          },
          { callFrame: frame('parser', 'node_modules/x/index.js', 3), selfSize: 2000, children: [] },
        ],
      },
    };
    const text = summarizeAllocations(profile, 10);
    assert.match(text, /^1200 B per request allocated \(10 requests\)/);
    const [self, inclusive] = text.split('-- inclusive, per request');
    assert.match(
      self!,
      /600 B {2}serve src\/serving\/serve\.ts:29\n\s+400 B {2}handler src\/http\/route\.ts:10\n\s+200 B {2}parser node_modules\/x\/index\.js:3/,
    );
    assert.match(inclusive!, /1200 B {2}\(root\)/);
    assert.match(inclusive!, /1000 B {2}handler src\/http\/route\.ts:10/);
  });
});
