import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseYaml, parseYamlDocuments } from './yaml.js';

test('yaml subset: mappings, both sequence styles, scalars and comments', () => {
  const doc = parseYaml(`# a comment
name: recgate   # trailing comment
port: 8080
ratio: 0.5
on: true
off: false
none: null
empty:
quoted: "a: b # not a comment"
single: 'it''s'
url: postgres://u:p@db:5432/x
flow: [serve, "--port", 4010]
obj: {}
list:
- a
- b
nested:
  items:
    - name: first
      value: "1"
    - name: second
      env:
      - name: X
        value: y
    -
      - deep
`);
  assert.deepEqual(doc, {
    name: 'recgate',
    port: 8080,
    ratio: 0.5,
    on: true,
    off: false,
    none: null,
    empty: null,
    quoted: 'a: b # not a comment',
    single: "it's",
    url: 'postgres://u:p@db:5432/x',
    flow: ['serve', '--port', 4010],
    obj: {},
    list: ['a', 'b'],
    nested: {
      items: [{ name: 'first', value: '1' }, { name: 'second', env: [{ name: 'X', value: 'y' }] }, ['deep']],
    },
  });
});

test('yaml subset: documents split on ---', () => {
  assert.deepEqual(parseYamlDocuments('---\na: 1\n---\n# only a comment\n---\nb: 2\n'), [{ a: 1 }, { b: 2 }]);
  assert.throws(() => parseYaml('a: 1\n---\nb: 2\n'), /expected one document, found 2/);
});

test('yaml subset: anything outside it is an error naming the line', () => {
  const cases: [string, RegExp][] = [
    ['a: &anchor x\n', /line 1: unsupported YAML syntax/],
    ['a: *alias\n', /line 1: unsupported YAML syntax/],
    ['a:\n  <<: x\n', /line 2: merge keys/],
    ['a: |\n  text\n', /line 1: unsupported YAML syntax/],
    ['a: {b: 1}\n', /line 1: unsupported YAML syntax/],
    ['a: !tag x\n', /line 1: unsupported YAML syntax/],
    ['a: 1\na: 2\n', /line 2: duplicate key "a"/],
    ['a:\n\tb: 1\n', /line 2: tabs/],
    ['a: 1\n  b: 2\n', /line 2: unexpected indentation/],
    ['a: "open\n', /line 1: unterminated quoted string/],
    ['just text\n', /line 1: expected "key: value"/],
    ['a: b: c\n', /line 1: a plain scalar may not contain/],
  ];
  for (const [source, message] of cases) {
    assert.throws(() => parseYaml(source), message, JSON.stringify(source));
  }
});
