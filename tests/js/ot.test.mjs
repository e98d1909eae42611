// Unit tests of the operational transform in static/materi/realtime.js.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  InvalidOperation,
  apply,
  codePointLength,
  codePointToUtf16Offset,
  compose,
  consumedLength,
  diff,
  lengthChange,
  normalize,
  transform,
  transformPair,
  transformPosition,
  utf16ToCodePointOffset,
  validate,
} from '../../static/materi/realtime.js';

// Small seeded PRNG (mulberry32), so a failing random case can be replayed.
function createRandom(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Pieces of text that differ between code points and UTF-16 units: emoji (a surrogate
// pair), a flag (two pairs), a combining mark, CRLF and plain ASCII.
const PIECES = ['a', 'b', 'Z', ' ', '😀', '🇫🇷', 'e\u0301', '\r\n', 'é', '\n'];

function randomText(random, maxPieces) {
  const count = Math.floor(random() * (maxPieces + 1));
  let text = '';
  for (let index = 0; index < count; index += 1) {
    text += PIECES[Math.floor(random() * PIECES.length)];
  }
  return text;
}

function randomOperation(random, text) {
  const length = codePointLength(text);
  const ops = [];
  let position = 0;
  while (position < length || random() < 0.3) {
    const roll = random();
    const count = 1 + Math.floor(random() * Math.min(4, Math.max(1, length - position)));
    if (roll < 0.4 && position + count <= length) {
      ops.push({ retain: count });
      position += count;
    } else if (roll < 0.7) {
      const inserted = randomText(random, 3) || 'x';
      ops.push({ insert: inserted });
    } else if (position + count <= length) {
      ops.push({ delete: count });
      position += count;
    }
    if (random() < 0.1) {
      break;
    }
  }
  return ops;
}

describe('code points', () => {
  test('emoji counts as one character', () => {
    assert.equal(codePointLength('😀'), 1);
    assert.equal(codePointLength('a😀b'), 3);
    assert.equal(apply('a😀b', [{ retain: 1 }, { delete: 1 }]), 'ab');
    assert.equal(apply('a😀b', [{ retain: 2 }, { insert: 'x' }]), 'a😀xb');
  });

  test('flag counts as two characters', () => {
    assert.equal(codePointLength('🇫🇷'), 2);
    assert.equal(apply('🇫🇷', [{ delete: 1 }]), '🇷');
  });

  test('combining mark counts separately', () => {
    const text = 'e\u0301x';
    assert.equal(codePointLength(text), 3);
    assert.equal(apply(text, [{ retain: 1 }, { delete: 1 }]), 'ex');
  });

  test('CRLF counts as two characters', () => {
    const text = 'a\r\nb';
    assert.equal(codePointLength(text), 4);
    assert.equal(apply(text, [{ retain: 1 }, { delete: 2 }]), 'ab');
    assert.equal(apply(text, [{ retain: 2 }, { insert: '|' }]), 'a\r|\nb');
  });

  test('unpaired surrogate in a document counts as one', () => {
    assert.equal(codePointLength('a\ud800b'), 3);
    assert.equal(apply('a\ud800b', [{ retain: 1 }, { delete: 1 }]), 'ab');
  });

  test('offset conversion round trip', () => {
    const text = 'a😀b\r\n🇫🇷e\u0301';
    const length = codePointLength(text);
    for (let offset = 0; offset <= length; offset += 1) {
      const utf16 = codePointToUtf16Offset(text, offset);
      assert.equal(utf16ToCodePointOffset(text, utf16), offset);
    }
    assert.equal(codePointToUtf16Offset(text, 2), 3);
    assert.equal(codePointToUtf16Offset(text, length), text.length);
  });

  test('offsets match a reference on long texts', () => {
    const random = createRandom(7);
    for (let round = 0; round < 40; round += 1) {
      // Long runs of one piece, so the pair counting crosses many boundaries.
      let text = '';
      while (text.length < 2000) {
        const piece = PIECES[Math.floor(random() * PIECES.length)];
        text += piece.repeat(1 + Math.floor(random() * 300));
      }
      const codePoints = Array.from(text);
      assert.equal(codePointLength(text), codePoints.length);
      for (let check = 0; check < 50; check += 1) {
        const offset = Math.floor(random() * (codePoints.length + 1));
        const expected = codePoints.slice(0, offset).join('').length;
        assert.equal(codePointToUtf16Offset(text, offset), expected, `offset ${offset}`);
      }
    }
  });

  test('offset inside a surrogate pair rounds down', () => {
    assert.equal(utf16ToCodePointOffset('a😀b', 2), 1);
    assert.equal(utf16ToCodePointOffset('a😀b', 3), 2);
  });

  test('offset conversion rejects out of range', () => {
    assert.throws(() => codePointToUtf16Offset('a😀', 3), RangeError);
    assert.throws(() => codePointToUtf16Offset('a', -1), RangeError);
    assert.throws(() => utf16ToCodePointOffset('a😀', 4), RangeError);
    assert.throws(() => utf16ToCodePointOffset('a', 0.5), RangeError);
  });
});

describe('validate and normalize', () => {
  test('normalize merges and drops trailing retain', () => {
    const ops = [{ retain: 1 }, { retain: 2 }, { insert: 'a' }, { insert: 'b' }, { retain: 4 }];
    assert.deepEqual(normalize(ops), [{ retain: 3 }, { insert: 'ab' }]);
  });

  test('normalize puts insert before delete', () => {
    const ops = [{ retain: 1 }, { delete: 2 }, { insert: 'x' }, { delete: 1 }, { insert: 'y' }];
    assert.deepEqual(normalize(ops), [{ retain: 1 }, { insert: 'xy' }, { delete: 3 }]);
  });

  test('normalize does not mutate its input', () => {
    const ops = [{ retain: 1 }, { retain: 1 }];
    normalize(ops);
    assert.deepEqual(ops, [{ retain: 1 }, { retain: 1 }]);
  });

  const invalidCases = [
    ['not an array', { retain: 1 }, 'operation must be a list of components, got object'],
    ['number component', [1], 'component 0 is not a retain, insert or delete: 1'],
    ['null component', [null], 'component 0 is not a retain, insert or delete: null'],
    ['empty component', [{}], 'component 0 is empty'],
    ['zero retain', [{ retain: 0 }], 'component 0: retain count must be a positive integer, got 0'],
    ['fractional delete', [{ delete: 1.5 }], 'component 0: delete count must be a positive integer, got 1.5'],
    ['boolean delete', [{ delete: true }], 'component 0: delete count must be a positive integer, got true'],
    ['empty insert', [{ insert: '' }], 'component 0: insert must be a non-empty string, got ""'],
    [
      'two kinds',
      [{ retain: 1, delete: 1 }],
      'component 0 must have exactly one of retain, insert or delete, got retain and delete: {"retain":1,"delete":1}',
    ],
    ['unexpected key', [{ retain: 1, foo: 2 }], 'component 0 has unexpected key "foo": {"retain":1,"foo":2}'],
    [
      'lone surrogate insert',
      [{ retain: 1 }, { insert: 'a\ud800' }],
      'component 1: insert contains a lone surrogate at offset 1 (U+D800)',
    ],
    [
      'NUL insert',
      [{ insert: '😀a\u0000' }],
      'component 0: insert contains U+0000 at offset 2; documents cannot contain it',
    ],
  ];
  for (const [name, ops, message] of invalidCases) {
    test(`validate rejects ${name}`, () => {
      assert.throws(() => validate(ops), { name: 'InvalidOperation', message });
    });
  }

  test('validate checks the document length', () => {
    validate([{ retain: 3 }, { delete: 2 }], 5);
    assert.throws(() => validate([{ retain: 3 }, { delete: 3 }], 5), InvalidOperation);
  });

  test('validate checks the insert limit', () => {
    validate([{ insert: '😀😀' }], null, 2);
    assert.throws(() => validate([{ insert: '😀😀😀' }], null, 2), {
      message: 'operation inserts 3 characters but the maximum is 2',
    });
  });

  test('validate rejects a negative limit', () => {
    assert.throws(() => validate([], -1), RangeError);
  });

  test('consumedLength and lengthChange count code points', () => {
    const ops = [{ retain: 2 }, { insert: '😀é' }, { delete: 3 }];
    assert.equal(consumedLength(ops), 5);
    assert.equal(lengthChange(ops), -1);
  });
});

describe('apply', () => {
  test('does not fit message names both lengths', () => {
    assert.throws(() => apply('abc', [{ retain: 2 }, { delete: 5 }]), {
      name: 'InvalidOperation',
      message:
        'operation retains or deletes 7 characters but the document has 3 characters. ' +
        'Fetch the operations that this one is missing and transform it against them',
    });
  });

  test('trailing retain is optional', () => {
    assert.equal(apply('hello', [{ insert: '> ' }]), '> hello');
    assert.equal(apply('hello', [{ insert: '> ' }, { retain: 5 }]), '> hello');
  });

  test('rejects a non-string text', () => {
    assert.throws(() => apply(null, []), TypeError);
  });

  test('small edit on a large document is fast', () => {
    // About a million code points, mostly ASCII with an emoji every 200 characters.
    const text = `${'x'.repeat(199)}😀`.repeat(5000);
    const edits = 50;
    let applyTime = 0;
    let arrayTime = 0;
    let current = text;

    // Baseline: one code-point array of the document per edit, which apply() must
    // not need. Alternating the two keeps the comparison fair on a loaded machine.
    for (let index = 0; index < edits; index += 1) {
      let started = performance.now();
      current = apply(current, [{ retain: 500000 + index }, { insert: 'y' }]);
      applyTime += performance.now() - started;

      started = performance.now();
      Array.from(current);
      arrayTime += performance.now() - started;
    }

    assert.equal(codePointLength(current), 1000000 + edits);
    assert.equal(current.slice(0, 200), text.slice(0, 200));
    assert.ok(
      applyTime < arrayTime,
      `${edits} edits took ${applyTime.toFixed(0)} ms, ${edits} Array.from calls ${arrayTime.toFixed(0)} ms`,
    );
  });
});

describe('compose and transform', () => {
  test('concurrent inserts at 0 give HelloWorld', () => {
    // Two clients insert at 0 on an empty document at version 0, and the server
    // commits "Hello" first.
    const hello = [{ insert: 'Hello' }];
    const world = [{ insert: 'World' }];

    // The server transforms the later edit over the committed one with "right".
    const worldOnServer = transform(world, hello, 'right');
    const serverText = apply(apply('', hello), worldOnServer);

    // Client A sent Hello and receives World as committed by the server.
    const clientA = apply(apply('', hello), worldOnServer);

    // Client B has World in flight and receives Hello, committed before it.
    const helloOnB = transform(hello, world, 'left');
    const clientB = apply(apply('', world), helloOnB);

    assert.equal(serverText, 'HelloWorld');
    assert.equal(clientA, 'HelloWorld');
    assert.equal(clientB, 'HelloWorld');
  });

  test('transform rejects an unknown side', () => {
    assert.throws(() => transform([], [], 'middle'), RangeError);
  });

  test('transformPair puts the first argument left', () => {
    const [aPrime, bPrime] = transformPair([{ insert: 'A' }], [{ insert: 'B' }]);
    assert.equal(apply('B', aPrime), 'AB');
    assert.equal(apply('A', bPrime), 'AB');
  });

  test('concurrent deletes of the same range', () => {
    const a = [{ retain: 1 }, { delete: 2 }];
    const b = [{ retain: 2 }, { delete: 2 }];
    const text = 'a😀bc';
    const left = apply(apply(text, a), transform(b, a, 'right'));
    const right = apply(apply(text, b), transform(a, b, 'left'));
    assert.equal(left, 'a');
    assert.equal(right, 'a');
  });

  test('random cases converge', () => {
    const random = createRandom(20240601);
    for (let index = 0; index < 3000; index += 1) {
      const text = randomText(random, 12);
      const a = randomOperation(random, text);
      const b = randomOperation(random, text);
      const context = JSON.stringify({ index, text, a, b });

      const viaA = apply(apply(text, a), transform(b, a, 'right'));
      const viaB = apply(apply(text, b), transform(a, b, 'left'));
      assert.equal(viaA, viaB, context);

      const afterA = apply(text, a);
      const c = randomOperation(random, afterA);
      assert.equal(apply(text, compose(a, c)), apply(afterA, c), `${context} c=${JSON.stringify(c)}`);

      const other = randomText(random, 12);
      assert.equal(apply(text, diff(text, other)), other, JSON.stringify({ text, other }));

      const length = codePointLength(text);
      const position = Math.floor(random() * (length + 1));
      const moved = transformPosition(position, a, random() < 0.5);
      assert.ok(moved >= 0, `${context} position=${position}`);
      assert.ok(moved <= codePointLength(afterA), `${context} position=${position}`);
    }
  });
});

describe('transformPosition', () => {
  test('remote insert at the caret leaves it before', () => {
    assert.equal(transformPosition(3, [{ retain: 3 }, { insert: 'xy' }], false), 3);
  });

  test('own insert at the caret moves it after', () => {
    assert.equal(transformPosition(3, [{ retain: 3 }, { insert: 'xy' }], true), 5);
  });

  test('insert before the caret shifts it', () => {
    assert.equal(transformPosition(3, [{ retain: 1 }, { insert: '😀😀' }]), 5);
  });

  test('insert after the caret leaves it', () => {
    assert.equal(transformPosition(3, [{ retain: 4 }, { insert: 'x' }]), 3);
  });

  test('caret inside a deletion moves to its start', () => {
    assert.equal(transformPosition(4, [{ retain: 2 }, { delete: 5 }]), 2);
    assert.equal(transformPosition(2, [{ retain: 2 }, { delete: 5 }]), 2);
  });

  test('caret after a deletion shifts back', () => {
    assert.equal(transformPosition(9, [{ retain: 2 }, { delete: 5 }]), 4);
  });

  test('replacement follows the insert rule', () => {
    const replace = [{ retain: 2 }, { insert: 'abc' }, { delete: 4 }];
    assert.equal(transformPosition(3, replace, false), 2);
    assert.equal(transformPosition(3, replace, true), 5);
  });

  test('rejects a negative position', () => {
    assert.throws(() => transformPosition(-1, []), RangeError);
  });
});

describe('diff', () => {
  test('equal texts give an empty operation', () => {
    assert.deepEqual(diff('same', 'same'), []);
  });

  test('keeps common prefix and suffix', () => {
    assert.deepEqual(diff('hello world', 'hello brave world'), [{ retain: 6 }, { insert: 'brave ' }]);
    assert.deepEqual(diff('abcdef', 'abef'), [{ retain: 2 }, { delete: 2 }]);
  });

  test('never splits a surrogate pair', () => {
    // U+1F600 and U+1F601 share their high surrogate.
    assert.deepEqual(diff('a😀b', 'a😁b'), [{ retain: 1 }, { insert: '😁' }, { delete: 1 }]);
    // U+1F600 and U+2F600 do not share it but share the low surrogate.
    assert.deepEqual(diff('😀', '\u{2F600}'), [{ insert: '\u{2F600}' }, { delete: 1 }]);
  });

  test('counts positions in code points', () => {
    assert.deepEqual(diff('😀😀x', '😀😀yx'), [{ retain: 2 }, { insert: 'y' }]);
  });
});
