/**
 * Materi Realtime client: operational transform on plain text and a WebSocket client
 * for the document protocol in docs/protocol.md.
 *
 * Every length and position in this module counts Unicode code points, as the server
 * does, and not UTF-16 code units: "😀" has length 1. Use codePointToUtf16Offset() and
 * utf16ToCodePointOffset() to convert to and from DOM selection offsets.
 *
 * The module has no dependencies and runs unchanged in browsers and in Node 20 or
 * later (Node needs --experimental-websocket, or a WebSocket constructor passed in).
 */

// Operational transform
//
// An operation is an array of components: {retain: n} keeps n characters,
// {insert: "text"} inserts text and {delete: n} removes n characters. An operation may
// end before the document does, and the characters after its last component stay
// unchanged. The functions below mirror the server's Python module
// (sdk/python/materi_realtime/ot.py) and raise the same messages.
//
// Tie rule: when two concurrent operations insert at the same position, the operation
// that the server committed first keeps its text on the left.
//
// Cursor rule: transformPosition() leaves a caret before text that another client
// inserts exactly at the caret (own = false), but moves it after text that the caret's
// own author inserts there (own = true). A caret inside a deleted range moves to the
// start of the deletion, and text inserted in place of the deleted range then follows
// the same rule as an insert at the caret.

const RETAIN = 'retain';
const INSERT = 'insert';
const DELETE = 'delete';
const KINDS = [RETAIN, INSERT, DELETE];

// Maximum length of a value's JSON text inside an error message.
const MAX_REPR_LENGTH = 80;

/** Error raised for an operation that is malformed or does not fit its document. */
export class InvalidOperation extends Error {
  constructor(message) {
    super(message);
    this.name = 'InvalidOperation';
  }
}

// Code points

function isHighSurrogate(unit) {
  return unit >= 0xd800 && unit <= 0xdbff;
}

function isLowSurrogate(unit) {
  return unit >= 0xdc00 && unit <= 0xdfff;
}

// A surrogate pair: two UTF-16 units that form one code point.
const SURROGATE_PAIRS = /[\ud800-\udbff][\udc00-\udfff]/g;

/**
 * Returns the number of surrogate pairs in text.slice(start, end). Removing them with
 * a native replace() is several times faster than a charCodeAt loop on text with few
 * emoji, and allocates no object per pair as match() would.
 */
function countSurrogatePairs(text, start, end) {
  const slice = text.slice(start, end);
  return (slice.length - slice.replace(SURROGATE_PAIRS, '').length) / 2;
}

/**
 * Returns the UTF-16 index reached by moving `count` code points forward from the
 * UTF-16 index `start`, or -1 when the text ends first. A surrogate pair counts as one
 * code point and an unpaired surrogate as one, as in Python strings. `start` must not
 * split a surrogate pair.
 */
function advanceCodePoints(text, start, count) {
  let index = start;
  let remaining = count;
  // Each round moves `remaining` units forward. Every pair among them covered one
  // code point less than its two units, so the next round moves that many more.
  while (remaining > 0) {
    let end = index + remaining;
    if (end > text.length) {
      return -1;
    }
    remaining = countSurrogatePairs(text, index, end);
    if (isHighSurrogate(text.charCodeAt(end - 1)) && isLowSurrogate(text.charCodeAt(end))) {
      // The last unit starts a pair, so the pair's second unit belongs to it.
      end += 1;
    }
    index = end;
  }
  return index;
}

/** Returns the number of Unicode code points in `text`. */
export function codePointLength(text) {
  return text.length - countSurrogatePairs(text, 0, text.length);
}

/**
 * Converts a code-point offset in `text` to a UTF-16 offset, as used by String
 * methods and by textarea selectionStart and selectionEnd.
 * Throws RangeError when the offset is negative, not an integer or past the end.
 */
export function codePointToUtf16Offset(text, offset) {
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new RangeError(`offset must be a non-negative integer, got ${offset}`);
  }
  const index = advanceCodePoints(text, 0, offset);
  if (index < 0) {
    throw new RangeError(
      `offset ${offset} is past the end of a text of ${codePointLength(text)} code points`,
    );
  }
  return index;
}

/**
 * Converts a UTF-16 offset in `text` to a code-point offset. An offset between the two
 * halves of a surrogate pair maps to the start of that pair.
 * Throws RangeError when the offset is negative, not an integer or past the end.
 */
export function utf16ToCodePointOffset(text, offset) {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset > text.length) {
    throw new RangeError(
      `offset must be an integer from 0 to ${text.length}, got ${offset}`,
    );
  }
  let codePoints = 0;
  let index = 0;
  while (index < offset) {
    const next = advanceCodePoints(text, index, 1);
    if (next > offset) {
      break;
    }
    index = next;
    codePoints += 1;
  }
  return codePoints;
}

/** Returns the code points of `text` from code point `start` to code point `end`. */
function sliceCodePoints(text, start, end) {
  const from = advanceCodePoints(text, 0, start);
  const to = advanceCodePoints(text, from, end - start);
  return text.slice(from, to);
}

// Validation

function typeName(value) {
  if (value === null) {
    return 'null';
  }
  if (Array.isArray(value)) {
    return 'array';
  }
  return typeof value;
}

function shortRepr(value) {
  let text;
  try {
    text = JSON.stringify(value);
  } catch {
    text = undefined;
  }
  if (text === undefined) {
    text = String(value);
  }
  if (text.length > MAX_REPR_LENGTH) {
    return `${text.slice(0, MAX_REPR_LENGTH - 3)}...`;
  }
  return text;
}

function isCount(value) {
  return Number.isSafeInteger(value) && value > 0;
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * Validates one component and returns it as a [kind, value, length] part, where
 * length is the code-point length of an insert and the count of a retain or delete.
 */
function parseComponent(index, component) {
  if (component === null || typeof component !== 'object' || Array.isArray(component)) {
    throw new InvalidOperation(
      `component ${index} is not a retain, insert or delete: ${shortRepr(component)}`,
    );
  }
  const keys = Object.keys(component);
  if (keys.length === 0) {
    throw new InvalidOperation(`component ${index} is empty`);
  }
  const kinds = KINDS.filter((kind) => Object.hasOwn(component, kind));
  if (kinds.length === 0) {
    throw new InvalidOperation(
      `component ${index} is not a retain, insert or delete: ${shortRepr(component)}`,
    );
  }
  if (kinds.length > 1) {
    throw new InvalidOperation(
      `component ${index} must have exactly one of retain, insert or delete, ` +
        `got ${kinds.join(' and ')}: ${shortRepr(component)}`,
    );
  }
  const kind = kinds[0];
  if (keys.length > 1) {
    const unexpected = keys.filter((key) => key !== kind).map((key) => shortRepr(key));
    const noun = unexpected.length === 1 ? 'key' : 'keys';
    throw new InvalidOperation(
      `component ${index} has unexpected ${noun} ${unexpected.join(', ')}: ` +
        shortRepr(component),
    );
  }

  const value = component[kind];
  if (kind === INSERT) {
    if (typeof value !== 'string' || value.length === 0) {
      throw new InvalidOperation(
        `component ${index}: insert must be a non-empty string, got ${shortRepr(value)}`,
      );
    }
    const surrogate = LONE_SURROGATE.exec(value);
    if (surrogate !== null) {
      const offset = codePointLength(value.slice(0, surrogate.index));
      const hex = surrogate[0].charCodeAt(0).toString(16).toUpperCase();
      throw new InvalidOperation(
        `component ${index}: insert contains a lone surrogate at offset ${offset} (U+${hex})`,
      );
    }
    const nul = value.indexOf('\u0000');
    if (nul !== -1) {
      // PostgreSQL cannot store U+0000 in text or jsonb.
      const offset = codePointLength(value.slice(0, nul));
      throw new InvalidOperation(
        `component ${index}: insert contains U+0000 at offset ${offset}; documents cannot contain it`,
      );
    }
    return [kind, value, codePointLength(value)];
  }
  if (!isCount(value)) {
    throw new InvalidOperation(
      `component ${index}: ${kind} count must be a positive integer, got ${shortRepr(value)}`,
    );
  }
  return [kind, value, value];
}

/** Validates the structure of an operation and returns its parts. */
function parse(ops) {
  if (!Array.isArray(ops)) {
    throw new InvalidOperation(`operation must be a list of components, got ${typeName(ops)}`);
  }
  return ops.map((component, index) => parseComponent(index, component));
}

function consumedOf(parts) {
  let total = 0;
  for (const [kind, , length] of parts) {
    if (kind !== INSERT) {
      total += length;
    }
  }
  return total;
}

function insertedOf(parts) {
  let total = 0;
  for (const [kind, , length] of parts) {
    if (kind === INSERT) {
      total += length;
    }
  }
  return total;
}

function checkLimitArgument(name, value) {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`${name} must be a non-negative integer, got ${shortRepr(value)}`);
  }
}

function doesNotFitError(consumed, docLength) {
  return new InvalidOperation(
    `operation retains or deletes ${consumed} characters but the document ` +
      `has ${docLength} characters. Fetch the operations that this one is ` +
      'missing and transform it against them',
  );
}

/**
 * Throws InvalidOperation unless `ops` is a well-formed operation.
 *
 * When docLength is given, the operation must also retain and delete at most
 * docLength characters in total. When maxInsertLength is given, the operation must
 * insert at most that many characters. Throws RangeError if either limit is not a
 * non-negative integer. Pass null or undefined to skip a limit.
 */
export function validate(ops, docLength = null, maxInsertLength = null) {
  if (docLength !== null && docLength !== undefined) {
    checkLimitArgument('docLength', docLength);
  }
  if (maxInsertLength !== null && maxInsertLength !== undefined) {
    checkLimitArgument('maxInsertLength', maxInsertLength);
  }
  const parts = parse(ops);
  if (docLength !== null && docLength !== undefined) {
    const consumed = consumedOf(parts);
    if (consumed > docLength) {
      throw doesNotFitError(consumed, docLength);
    }
  }
  if (maxInsertLength !== null && maxInsertLength !== undefined) {
    const inserted = insertedOf(parts);
    if (inserted > maxInsertLength) {
      throw new InvalidOperation(
        `operation inserts ${inserted} characters but the maximum is ${maxInsertLength}`,
      );
    }
  }
}

/**
 * Validates `ops` and returns the characters it retains or deletes: the minimum length
 * of a document that the operation applies to.
 */
export function consumedLength(ops) {
  return consumedOf(parse(ops));
}

/** Validates `ops` and returns the inserted minus the deleted characters. */
export function lengthChange(ops) {
  const parts = parse(ops);
  let deleted = 0;
  for (const [kind, , length] of parts) {
    if (kind === DELETE) {
      deleted += length;
    }
  }
  return insertedOf(parts) - deleted;
}

// Building and iterating

/**
 * Accumulator that appends components in normalized form. Adjacent components of one
 * kind merge, and an insert that follows a delete moves in front of it, so after the
 * last retain there is at most one insert followed by at most one delete.
 */
class OperationBuilder {
  constructor() {
    // Each entry is [kind, value, length]. An insert's value is an array of strings
    // that build() joins, so merging many inserts stays linear in their length.
    this.entries = [];
  }

  last(offset = 1) {
    return this.entries[this.entries.length - offset];
  }

  retain(count) {
    if (count <= 0) {
      return;
    }
    const last = this.last();
    if (last !== undefined && last[0] === RETAIN) {
      last[1] += count;
      last[2] += count;
    } else {
      this.entries.push([RETAIN, count, count]);
    }
  }

  delete(count) {
    if (count <= 0) {
      return;
    }
    const last = this.last();
    if (last !== undefined && last[0] === DELETE) {
      last[1] += count;
      last[2] += count;
    } else {
      this.entries.push([DELETE, count, count]);
    }
  }

  insert(text, length = codePointLength(text)) {
    if (text.length === 0) {
      return;
    }
    const last = this.last();
    if (last !== undefined && last[0] === DELETE) {
      const beforeLast = this.last(2);
      if (beforeLast !== undefined && beforeLast[0] === INSERT) {
        beforeLast[1].push(text);
        beforeLast[2] += length;
      } else {
        this.entries.splice(this.entries.length - 1, 0, [INSERT, [text], length]);
      }
    } else if (last !== undefined && last[0] === INSERT) {
      last[1].push(text);
      last[2] += length;
    } else {
      this.entries.push([INSERT, [text], length]);
    }
  }

  add(kind, value, length) {
    if (kind === RETAIN) {
      this.retain(value);
    } else if (kind === INSERT) {
      this.insert(value, length);
    } else {
      this.delete(value);
    }
  }

  /** Returns the parts without a trailing retain. */
  buildParts() {
    let end = this.entries.length;
    if (end > 0 && this.entries[end - 1][0] === RETAIN) {
      end -= 1;
    }
    const parts = [];
    for (let index = 0; index < end; index += 1) {
      const [kind, value, length] = this.entries[index];
      parts.push([kind, kind === INSERT ? value.join('') : value, length]);
    }
    return parts;
  }

  /** Returns the operation as new component objects, without a trailing retain. */
  build() {
    return this.buildParts().map(([kind, value]) => ({ [kind]: value }));
  }
}

/**
 * Cursor over parsed parts that can take part of the current one. Past the last part
 * the iterator behaves as an endless retain, which is how an operation treats the
 * rest of the document.
 */
class PartIterator {
  constructor(parts) {
    this.parts = parts;
    this.index = 0;
    // Code points already taken from the current part, and for an insert the
    // matching UTF-16 offset into its text.
    this.offset = 0;
    this.unitOffset = 0;
  }

  exhausted() {
    return this.index >= this.parts.length;
  }

  /** Returns the kind of the current part, or null when exhausted. */
  kind() {
    return this.exhausted() ? null : this.parts[this.index][0];
  }

  /** Returns the untaken length of the current part, or 0 when exhausted. */
  remaining() {
    return this.exhausted() ? 0 : this.parts[this.index][2] - this.offset;
  }

  /**
   * Takes `count` characters of the current part and returns them as a part.
   * count must not exceed remaining() unless the iterator is exhausted, in which case
   * the result is a retain of count.
   */
  take(count) {
    if (this.exhausted()) {
      return [RETAIN, count, count];
    }
    const [kind, value, length] = this.parts[this.index];
    let taken = count;
    if (kind === INSERT) {
      const end = advanceCodePoints(value, this.unitOffset, count);
      taken = value.slice(this.unitOffset, end);
      this.unitOffset = end;
    }
    this.offset += count;
    if (this.offset >= length) {
      this.index += 1;
      this.offset = 0;
      this.unitOffset = 0;
    }
    return [kind, taken, count];
  }

  /** Takes what remains of the current part, which must exist. */
  takeRest() {
    return this.take(this.remaining());
  }
}

/** Returns the length both iterators can take next; call only if one has more. */
function commonLength(first, second) {
  if (first.exhausted()) {
    return second.remaining();
  }
  if (second.exhausted()) {
    return first.remaining();
  }
  return Math.min(first.remaining(), second.remaining());
}

function normalizedParts(parts) {
  const builder = new OperationBuilder();
  for (const [kind, value, length] of parts) {
    builder.add(kind, value, length);
  }
  return builder.buildParts();
}

// Public operations

/**
 * Validates `ops` and returns its canonical form. Adjacent components of the same kind
 * merge, a trailing retain is dropped, and an insert next to a delete goes first. Two
 * operations whose effect is equal on every document normalize to equal arrays.
 */
export function normalize(ops) {
  const builder = new OperationBuilder();
  for (const [kind, value, length] of parse(ops)) {
    builder.add(kind, value, length);
  }
  return builder.build();
}

/**
 * Applies `ops` to `text` and returns the new text.
 *
 * Throws InvalidOperation if ops is malformed or retains or deletes more characters
 * than text has. The work is linear in the number of components, the inserted text and
 * the text up to the last retain or delete, so a small edit near the start of a large
 * document stays cheap.
 */
export function apply(text, ops) {
  if (typeof text !== 'string') {
    throw new TypeError(`text must be a string, got ${typeName(text)}`);
  }
  const parts = parse(ops);
  const pieces = [];
  let index = 0;
  for (const [kind, value] of parts) {
    if (kind === INSERT) {
      pieces.push(value);
      continue;
    }
    const next = advanceCodePoints(text, index, value);
    if (next < 0) {
      throw doesNotFitError(consumedOf(parts), codePointLength(text));
    }
    if (kind === RETAIN) {
      pieces.push(text.slice(index, next));
    }
    index = next;
  }
  pieces.push(text.slice(index));
  return pieces.join('');
}

/**
 * Returns one normalized operation equivalent to applying `a` and then `b`, where b
 * applies to the output of a. On a document where a fits and b fits a's output, the
 * result fits and gives the same text.
 */
export function compose(a, b) {
  const first = new PartIterator(parse(a));
  const second = new PartIterator(parse(b));
  const builder = new OperationBuilder();

  for (;;) {
    // Text that a deletes never reaches b, and text that b inserts is not in a.
    if (first.kind() === DELETE) {
      builder.delete(first.takeRest()[1]);
      continue;
    }
    if (second.kind() === INSERT) {
      const [, text, length] = second.takeRest();
      builder.insert(text, length);
      continue;
    }
    if (first.exhausted() && second.exhausted()) {
      break;
    }

    const length = commonLength(first, second);
    const [firstKind, firstValue] = first.take(length);
    const [secondKind] = second.take(length);
    if (firstKind === RETAIN) {
      builder.add(secondKind, length, length);
    } else if (secondKind === RETAIN) {
      // b keeps text that a inserted.
      builder.insert(firstValue, length);
    }
    // Otherwise b deletes text that a inserted, and neither appears.
  }
  return builder.build();
}

function checkSide(side) {
  if (side !== 'left' && side !== 'right') {
    throw new RangeError(`side must be 'left' or 'right', got ${shortRepr(side)}`);
  }
}

/**
 * Returns `a` rewritten to apply after `b`, where a and b apply to the same document.
 *
 * side is "left" or "right" and sets where a's insert goes when a and b insert at the
 * same position: "left" puts a's text before b's. The server transforms an incoming
 * operation against a committed one with "right", and a client transforms a committed
 * operation against its own pending one with "left". For a and b valid on a document
 * d, apply(apply(d, a), transform(b, a, "right")) equals
 * apply(apply(d, b), transform(a, b, "left")).
 *
 * NOTE: transforming against compose(b1, b2) can order tied inserts differently from
 * transforming against b1 and then b2, so committed operations must be transformed
 * against one at a time.
 */
export function transform(a, b, side) {
  checkSide(side);
  // Normalized inputs put an insert before an adjacent delete, so a tie means the same
  // position whichever way the caller ordered its components.
  const mine = new PartIterator(normalizedParts(parse(a)));
  const theirs = new PartIterator(normalizedParts(parse(b)));
  const builder = new OperationBuilder();
  const mineFirst = side === 'left';

  for (;;) {
    if (mine.kind() === INSERT && (mineFirst || theirs.kind() !== INSERT)) {
      const [, text, length] = mine.takeRest();
      builder.insert(text, length);
      continue;
    }
    if (theirs.kind() === INSERT) {
      builder.retain(theirs.remaining());
      theirs.takeRest();
      continue;
    }
    if (mine.exhausted() && theirs.exhausted()) {
      break;
    }

    const length = commonLength(mine, theirs);
    const [mineKind] = mine.take(length);
    const [theirsKind] = theirs.take(length);
    if (theirsKind === DELETE) {
      // b already removed this text, so a's retain or delete of it vanishes.
      continue;
    }
    builder.add(mineKind, length, length);
  }
  return builder.build();
}

/**
 * Transforms two concurrent operations against each other, `a` on the left on ties.
 * Returns [aPrime, bPrime], where aPrime applies after b and bPrime after a, and both
 * orders give the same text.
 */
export function transformPair(a, b) {
  return [transform(a, b, 'left'), transform(b, a, 'right')];
}

/**
 * Returns where a caret at `position` ends up after `ops` is applied.
 *
 * `own` is true when the caret belongs to the author of ops. It decides the side of an
 * insert exactly at the caret (see the cursor rule at the top of this module). If
 * position is within the document that ops applies to, the result lies within
 * [0, new length]. Throws RangeError if position is not a non-negative integer.
 */
export function transformPosition(position, ops, own = false) {
  checkLimitArgument('position', position);
  let oldIndex = 0;
  let newIndex = 0;
  // Length of the insert just before the current delete, which replaces the deleted
  // text and shares its start position.
  let replacementLength = 0;

  for (const [kind, , length] of normalizedParts(parse(ops))) {
    if (kind === RETAIN) {
      if (position < oldIndex + length) {
        return newIndex + position - oldIndex;
      }
      oldIndex += length;
      newIndex += length;
      replacementLength = 0;
    } else if (kind === INSERT) {
      if (position === oldIndex) {
        return own ? newIndex + length : newIndex;
      }
      newIndex += length;
      replacementLength = length;
    } else {
      if (position < oldIndex + length) {
        // The caret was at the start of or inside the deleted range.
        return own ? newIndex : newIndex - replacementLength;
      }
      oldIndex += length;
      replacementLength = 0;
    }
  }
  return newIndex + position - oldIndex;
}

/**
 * Returns an operation that turns `oldText` into `newText`: a retain of the common
 * prefix, then an insert and a delete for the changed middle. The prefix and suffix
 * never split a surrogate pair. The result is normalized, so it has no trailing
 * retain, and it is empty when the texts are equal.
 */
export function diff(oldText, newText) {
  if (typeof oldText !== 'string' || typeof newText !== 'string') {
    throw new TypeError(
      `diff expects two strings, got ${typeName(oldText)} and ${typeName(newText)}`,
    );
  }
  if (oldText === newText) {
    return [];
  }
  const shorter = Math.min(oldText.length, newText.length);
  let prefix = 0;
  while (prefix < shorter && oldText.charCodeAt(prefix) === newText.charCodeAt(prefix)) {
    prefix += 1;
  }
  // Keep a surrogate pair whole: stepping back is needed when the prefix ends between
  // a high surrogate and its low surrogate.
  if (prefix > 0 && isHighSurrogate(oldText.charCodeAt(prefix - 1))) {
    prefix -= 1;
  }

  let suffix = 0;
  const maxSuffix = shorter - prefix;
  while (
    suffix < maxSuffix &&
    oldText.charCodeAt(oldText.length - 1 - suffix) ===
      newText.charCodeAt(newText.length - 1 - suffix)
  ) {
    suffix += 1;
  }
  if (suffix > 0 && isLowSurrogate(oldText.charCodeAt(oldText.length - suffix))) {
    suffix -= 1;
  }

  const builder = new OperationBuilder();
  builder.retain(codePointLength(oldText.slice(0, prefix)));
  builder.insert(newText.slice(prefix, newText.length - suffix));
  builder.delete(codePointLength(oldText.slice(prefix, oldText.length - suffix)));
  return builder.build();
}

/**
 * Splits `ops` so that the first operation inserts at most `maxInsertLength`
 * characters. Returns [first, rest], where rest applies to the output of first and
 * compose(first, rest) equals ops; rest is null when no split is needed.
 */
function splitAtInsertLimit(ops, maxInsertLength) {
  const parts = normalizedParts(parse(ops));
  const first = new OperationBuilder();
  let inserted = 0;
  // Characters of first's output so far, which rest must retain.
  let outputLength = 0;

  for (let index = 0; index < parts.length; index += 1) {
    const [kind, value, length] = parts[index];
    if (kind === RETAIN) {
      first.retain(value);
      outputLength += value;
    } else if (kind === DELETE) {
      first.delete(value);
    } else if (inserted + length <= maxInsertLength) {
      first.insert(value, length);
      inserted += length;
      outputLength += length;
    } else {
      const headLength = maxInsertLength - inserted;
      first.insert(sliceCodePoints(value, 0, headLength), headLength);
      outputLength += headLength;

      const rest = new OperationBuilder();
      rest.retain(outputLength);
      rest.insert(sliceCodePoints(value, headLength, length), length - headLength);
      for (const [restKind, restValue, restLength] of parts.slice(index + 1)) {
        rest.add(restKind, restValue, restLength);
      }
      return [first.build(), rest.build()];
    }
  }
  return [first.build(), null];
}

// Client

const EVENTS = new Set([
  'operation',
  'state',
  'heartbeat',
  'error',
  'rate_limited',
  'connection_state',
  'ack',
  'change',
  'presence',
]);

// WebSocket.readyState values, from the WHATWG WebSocket standard.
const SOCKET_CONNECTING = 0;
const SOCKET_OPEN = 1;

// Close codes of docs/protocol.md.
const CLOSE_BAD_REQUEST = 4000;
const CLOSE_UNAUTHORIZED = 4001;
const CLOSE_FORBIDDEN = 4003;
const CLOSE_NOT_FOUND = 4004;
const CLOSE_BY_OPERATOR = 4010;
const CLOSE_MESSAGE_TOO_BIG = 1009;
const CLOSE_NORMAL = 1000;

const CLIENT_ID_PATTERN = /^[A-Za-z0-9_.:-]{1,64}$/;
const EDIT_ROLES = new Set(['owner', 'editor']);
const PROTOCOL_VERSION = 1;

const DEFAULT_RECONNECT = Object.freeze({ baseDelay: 500, maxDelay: 10000, maxAttempts: 20 });
const DEFAULT_HEARTBEAT_INTERVAL = 15000;
const DEFAULT_HEARTBEAT_TIMEOUT = 10000;
const DEFAULT_CONNECT_TIMEOUT = 10000;
// The server's default MATERI_MAX_INSERT_LENGTH.
const DEFAULT_MAX_INSERT_LENGTH = 100000;
// Time to wait for the close handshake in close() before giving up on the socket.
const CLOSE_HANDSHAKE_TIMEOUT = 2000;
// The access token is refreshed this long before its exp claim, or after 90% of the
// remaining lifetime when that is shorter.
const TOKEN_REFRESH_MARGIN = 30000;
// Maximum delay setTimeout() accepts (2 ** 31 - 1 ms, about 24.8 days).
const MAX_TIMER_DELAY = 2 ** 31 - 1;
// Time after which a resync from a snapshot is again immediate rather than backed off.
const RESYNC_BACKOFF_RESET = 60000;

// Presence
const ACTIVITY_STATES = new Set(['active', 'idle', 'away']);
const DEFAULT_IDLE_TIMEOUT = 60000;
// Minimum time between two cursor_update messages; calls in between are coalesced and
// the latest one is sent when the interval ends. The server broadcasts at most
// MATERI_CURSOR_UPDATES_PER_SECOND (20 by default) updates per client per second.
const SELECTION_SEND_INTERVAL = 50;
// The server's limit on selections in one cursor_update.
const MAX_SELECTIONS = 100;
// Committed operations kept for moving a cursor_update made at an older version.
const RECENT_OPERATIONS_LIMIT = 200;

/** Returns a random id of 1 to 64 characters from the protocol's id alphabet. */
function randomId() {
  const cryptoApi = globalThis.crypto;
  if (typeof cryptoApi?.randomUUID === 'function') {
    return cryptoApi.randomUUID();
  }
  // randomUUID() exists only in secure contexts, getRandomValues() everywhere.
  const bytes = new Uint8Array(16);
  cryptoApi.getRandomValues(bytes);
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('');
}

/**
 * Returns the `exp` claim of a JWT in ms since the epoch, or null when the token has
 * none or is not a JWT. The signature is not verified: the value only schedules a
 * refresh.
 */
function tokenExpiry(token) {
  if (typeof token !== 'string') {
    return null;
  }
  const segments = token.split('.');
  if (segments.length !== 3) {
    return null;
  }
  try {
    const base64 = segments[1].replace(/-/g, '+').replace(/_/g, '/');
    const padded = base64 + '='.repeat((4 - (base64.length % 4)) % 4);
    const payload = JSON.parse(globalThis.atob(padded));
    return Number.isFinite(payload?.exp) ? payload.exp * 1000 : null;
  } catch {
    return null;
  }
}

/** Returns `url` with the value of its token parameter replaced by [redacted]. */
function redactToken(url) {
  return url.replace(/([?&]token=)[^&#]*/g, '$1[redacted]');
}

/** Returns the page's own server as a ws: or wss: URL, or null outside a browser. */
function pageBaseUrl() {
  const location = globalThis.location;
  if (!location || typeof location.host !== 'string' || location.host === '') {
    return null;
  }
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}`;
}

/**
 * Returns where a position in the output of `ops` was in the input: a position inside
 * or at the end of inserted text maps to where the insert happened.
 */
function positionBeforeOperation(position, ops) {
  let oldIndex = 0;
  let newIndex = 0;
  for (const [kind, , length] of normalizedParts(parse(ops))) {
    if (kind === RETAIN) {
      if (position <= newIndex + length) {
        return oldIndex + position - newIndex;
      }
      oldIndex += length;
      newIndex += length;
    } else if (kind === INSERT) {
      if (position <= newIndex + length) {
        return oldIndex;
      }
      newIndex += length;
    } else {
      oldIndex += length;
    }
  }
  return oldIndex + position - newIndex;
}

function isPosition(value) {
  return Number.isSafeInteger(value) && value >= 0;
}

/**
 * Returns the valid {anchor, head} entries of a selections list from the server as
 * new objects, or an empty list when `selections` is not an array.
 */
function readSelections(selections) {
  if (!Array.isArray(selections)) {
    return [];
  }
  return selections
    .filter((selection) => isPosition(selection?.anchor) && isPosition(selection?.head))
    .map(({ anchor, head }) => ({ anchor, head }));
}

/** Returns `selections` with every position moved by `move(position)`. */
function mapSelections(selections, move) {
  return selections.map(({ anchor, head }) => ({ anchor: move(anchor), head: move(head) }));
}

function checkDelay(name, value) {
  if (!Number.isFinite(value) || value < 0) {
    throw new RangeError(`${name} must be a non-negative number of ms, got ${value}`);
  }
}

/**
 * A client for one document: it keeps `text` in sync with the server, sends local
 * edits, transforms remote ones and recovers from lost connections.
 *
 * Edits follow the classic OT client: at most one operation is in flight, and local
 * edits made meanwhile are composed into one buffer that is sent when the in-flight
 * operation is acknowledged.
 */
export class MateriRealtime {
  /**
   * Creates a client. Options:
   * - documentId (required): the document's id.
   * - accessToken: a JWT access token. Required unless tokenProvider is given.
   * - tokenProvider: async function returning a fresh access token. It is called when
   *   the server closes with 4001 and shortly before the token's exp claim.
   * - url: the server's base URL, e.g. "ws://127.0.0.1:8000". In a browser it defaults
   *   to the page's own host.
   * - clientId: 1 to 64 characters of A-Za-z0-9_.:- (default: a random UUID).
   * - reconnect: {baseDelay, maxDelay, maxAttempts}, delays in ms.
   * - heartbeatInterval, heartbeatTimeout, connectTimeout: ms; 0 disables each.
   * - maxInsertLength: most characters one sent operation inserts; larger edits are
   *   sent as several operations (default 100000, the server's default).
   * - idleTimeout: ms after the last sign of activity (setActivity('active'),
   *   setSelections() or a local edit) before the client reports itself idle
   *   (default 60000); 0 disables it.
   * - debug: log frames and state changes with console.debug.
   * - WebSocket: the WebSocket constructor (default globalThis.WebSocket).
   */
  constructor(options = {}) {
    const {
      accessToken = null,
      documentId,
      url,
      clientId = randomId(),
      debug = false,
      tokenProvider = null,
      reconnect = {},
      heartbeatInterval = DEFAULT_HEARTBEAT_INTERVAL,
      heartbeatTimeout = DEFAULT_HEARTBEAT_TIMEOUT,
      connectTimeout = DEFAULT_CONNECT_TIMEOUT,
      maxInsertLength = DEFAULT_MAX_INSERT_LENGTH,
      idleTimeout = DEFAULT_IDLE_TIMEOUT,
      WebSocket: socketClass = globalThis.WebSocket,
    } = options;

    if (typeof documentId !== 'string' || documentId === '') {
      throw new TypeError('documentId is required and must be a non-empty string');
    }
    if (typeof clientId !== 'string' || !CLIENT_ID_PATTERN.test(clientId)) {
      throw new TypeError(
        `clientId must be 1 to 64 characters of A-Z a-z 0-9 _ . : -, got ${shortRepr(clientId)}`,
      );
    }
    if (tokenProvider !== null && typeof tokenProvider !== 'function') {
      throw new TypeError('tokenProvider must be a function returning a token');
    }
    if (accessToken === null && tokenProvider === null) {
      throw new TypeError('accessToken or tokenProvider is required');
    }
    if (typeof socketClass !== 'function') {
      throw new TypeError(
        'no WebSocket constructor: pass the WebSocket option, or run Node 20 with --experimental-websocket',
      );
    }
    const baseUrl = url ?? pageBaseUrl();
    if (typeof baseUrl !== 'string' || baseUrl === '') {
      throw new TypeError('url is required outside a browser, e.g. "ws://127.0.0.1:8000"');
    }
    const reconnectOptions = { ...DEFAULT_RECONNECT, ...reconnect };
    checkDelay('reconnect.baseDelay', reconnectOptions.baseDelay);
    checkDelay('reconnect.maxDelay', reconnectOptions.maxDelay);
    if (!Number.isSafeInteger(reconnectOptions.maxAttempts) || reconnectOptions.maxAttempts < 0) {
      throw new RangeError(
        `reconnect.maxAttempts must be a non-negative integer, got ${reconnectOptions.maxAttempts}`,
      );
    }
    checkDelay('heartbeatInterval', heartbeatInterval);
    checkDelay('heartbeatTimeout', heartbeatTimeout);
    checkDelay('connectTimeout', connectTimeout);
    if (!Number.isSafeInteger(maxInsertLength) || maxInsertLength < 1) {
      throw new RangeError(`maxInsertLength must be a positive integer, got ${maxInsertLength}`);
    }
    checkDelay('idleTimeout', idleTimeout);

    this.documentId = documentId;
    this.clientId = clientId;
    this._baseUrl = baseUrl;
    this._token = accessToken;
    this._tokenProvider = tokenProvider;
    this._debugEnabled = Boolean(debug);
    this._reconnect = reconnectOptions;
    this._heartbeatInterval = heartbeatInterval;
    this._heartbeatTimeout = heartbeatTimeout;
    this._connectTimeout = connectTimeout;
    this._maxInsertLength = maxInsertLength;
    this.idleTimeout = idleTimeout;
    this._WebSocket = socketClass;

    this._listeners = new Map();
    this._state = 'disconnected';
    this._timers = new Set();
    this._heartbeatTimer = null;
    this._pongTimer = null;
    this._connectTimer = null;
    this._resendTimer = null;
    this._tokenTimer = null;
    this._reconnectTimer = null;

    // Document state. confirmedText is the server's text at `version`, which the
    // local text equals once the in-flight edit and the buffer are applied.
    this._text = '';
    this._confirmedText = '';
    this._version = 0;
    this._role = null;
    this._title = null;
    this._hasSynced = false;
    // The in-flight edit: {ops, messageId, socket, rejections, rebased}. `socket` is
    // the socket it was last sent on, so the client resends it on any other socket.
    this._inflight = null;
    this._buffer = null;

    // Connection state.
    this._socket = null;
    this._awaitingSync = false;
    this._queuedFrames = [];
    this._forceSnapshot = false;
    this._attempt = 0;
    this._unavailableAttempts = 0;
    this._consecutiveResyncs = 0;
    this._lastResyncAt = 0;
    this._connectWaiters = [];
    this._flushWaiters = [];
    this._openSerial = 0;

    // Presence of the other clients: user id -> {userId, displayName, color,
    // clients: Map of client id -> {clientId, selections, activity}}, in the order
    // they joined. Selections are positions in the local text.
    this._people = new Map();
    // Committed operations by the version they applied to, in confirmed-text
    // positions, for moving selections that refer to an older version.
    this._recentOperations = new Map();
    // This client's own selections in the local text (null until setSelections())
    // and activity, which are sent again on every new socket.
    this._selections = null;
    this._activity = 'active';
    this._activitySet = false;
    this._presenceSocket = null;
    this._lastSelectionsFrame = null;
    this._lastSelectionsSentAt = -Infinity;
    this._selectionsStale = false;
    this._selectionsTimer = null;
    this._idleTimer = null;
  }

  /** Connection state: one of connecting, connected, disconnected, reconnecting, closing, failed. */
  get connectionState() {
    return this._state;
  }

  /** Local text, including edits that the server has not acknowledged yet. */
  get text() {
    return this._text;
  }

  /** Version of the last server state this client has applied. */
  get version() {
    return this._version;
  }

  /** The user's role on the document (owner, editor, commenter or viewer), or null before the first sync. */
  get role() {
    return this._role;
  }

  /** The document's title from the last sync, or null before it. */
  get title() {
    return this._title;
  }

  /** Whether some local edit has not been acknowledged yet. */
  get hasPendingEdits() {
    return this._inflight !== null || this._buffer !== null;
  }

  /**
   * The other people with the document open, in the order they joined: a new array of
   * {userId, displayName, color, clients: [{clientId, selections, activity}]}, one
   * entry per user. Selections are code-point positions in `text`. This client's own
   * clientId is never listed, but the user's other clients (tabs) are.
   */
  get presence() {
    return this._presenceList();
  }

  /** This client's own activity: active, idle or away. */
  get activity() {
    return this._activity;
  }

  /** This client's own selections as last set with setSelections() and moved by edits, or null. */
  get selections() {
    return this._selections === null ? null : this._selections.map((selection) => ({ ...selection }));
  }

  // Events

  /** Adds a listener for `event` and returns a function that removes it. */
  on(event, listener) {
    if (!EVENTS.has(event)) {
      throw new TypeError(`unknown event ${shortRepr(event)}; expected one of: ${[...EVENTS].join(', ')}`);
    }
    if (typeof listener !== 'function') {
      throw new TypeError('listener must be a function');
    }
    if (!this._listeners.has(event)) {
      this._listeners.set(event, new Set());
    }
    this._listeners.get(event).add(listener);
    return () => this.off(event, listener);
  }

  /** Removes a listener added with on(). */
  off(event, listener) {
    this._listeners.get(event)?.delete(listener);
  }

  _emit(event, payload) {
    const listeners = this._listeners.get(event);
    if (!listeners || listeners.size === 0) {
      if (event === 'error') {
        console.warn('[materi-realtime] unhandled error event (add an error listener):', payload);
      }
      return;
    }
    for (const listener of [...listeners]) {
      try {
        listener(payload);
      } catch (error) {
        // A failing listener must not break the client's state machine.
        console.error(`[materi-realtime] a ${event} listener threw:`, error);
      }
    }
  }

  _emitError(code, message, messageId = null) {
    this._emit('error', { code, message, messageId });
  }

  _log(...parts) {
    if (this._debugEnabled) {
      console.debug('[materi-realtime]', ...parts);
    }
  }

  _setState(state, reason = null, details = {}) {
    const previous = this._state;
    if (previous === state) {
      return;
    }
    this._state = state;
    this._log(`state ${previous} -> ${state}${reason ? `: ${reason}` : ''}`);
    this._emit('connection_state', { state, previous, reason, ...details });
  }

  // Timers

  _setTimer(callback, delay) {
    const timer = setTimeout(() => {
      this._timers.delete(timer);
      callback();
    }, delay);
    this._timers.add(timer);
    return timer;
  }

  _clearTimer(timer) {
    if (timer !== null) {
      clearTimeout(timer);
      this._timers.delete(timer);
    }
    return null;
  }

  _clearAllTimers() {
    for (const timer of this._timers) {
      clearTimeout(timer);
    }
    this._timers.clear();
    this._stopHeartbeat();
    this._connectTimer = null;
    this._resendTimer = null;
    this._tokenTimer = null;
    this._reconnectTimer = null;
    this._selectionsTimer = null;
    this._idleTimer = null;
  }

  // Connecting and closing

  /**
   * Opens the connection. Resolves once the document is synced, and rejects if the
   * client ends in the failed state or is closed first. Reconnects use `since`, so a
   * client that connected before keeps its text, version and pending edits.
   */
  connect() {
    if (this._state === 'connected') {
      return Promise.resolve();
    }
    if (this._state === 'closing') {
      return Promise.reject(new Error('cannot connect while close() is in progress; await it first'));
    }
    const promise = new Promise((resolve, reject) => {
      this._connectWaiters.push({ resolve, reject });
    });
    if (this._state === 'disconnected' || this._state === 'failed') {
      this._attempt = 0;
      this._setState('connecting', 'connect() called');
      this._scheduleTokenRefresh();
      this._openSocket();
    }
    return promise;
  }

  /**
   * Closes the connection and clears every timer. Pending edits stay in the buffer and
   * are sent by a later connect(), but flush() and connect() calls waiting now reject.
   */
  async close() {
    if (this._state === 'closing' || this._state === 'disconnected' || this._state === 'failed') {
      return;
    }
    this._setState('closing', 'close() called');
    this._clearAllTimers();
    this._openSerial += 1;
    const socket = this._socket;
    this._socket = null;
    this._awaitingSync = false;
    this._queuedFrames = [];
    if (this._inflight !== null) {
      this._inflight.socket = null;
    }
    this._rejectConnectWaiters(new Error('the connection was closed before the document was synced'));
    this._rejectFlushWaiters(new Error('the connection was closed before every edit was acknowledged'));

    if (socket !== null) {
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, CLOSE_HANDSHAKE_TIMEOUT);
        const finish = () => {
          clearTimeout(timer);
          resolve();
        };
        socket.onopen = null;
        socket.onmessage = null;
        socket.onerror = null;
        socket.onclose = finish;
        if (!this._closeSocket(socket, CLOSE_NORMAL, 'client closed')) {
          finish();
        }
      });
    }
    this._clearPresence();
    this._setState('disconnected', 'closed by the client');
  }

  /** Closes `socket` if it is open or connecting; returns whether close() was called. */
  _closeSocket(socket, code, reason) {
    if (socket.readyState !== SOCKET_CONNECTING && socket.readyState !== SOCKET_OPEN) {
      return false;
    }
    try {
      socket.close(code, reason);
    } catch (error) {
      this._log('closing the socket failed:', error);
      return false;
    }
    return true;
  }

  _buildUrl() {
    const url = new URL(this._baseUrl);
    if (url.protocol === 'http:') {
      url.protocol = 'ws:';
    } else if (url.protocol === 'https:') {
      url.protocol = 'wss:';
    }
    const prefix = url.pathname.replace(/\/+$/, '');
    url.pathname = `${prefix}/v1/ws/documents/${encodeURIComponent(this.documentId)}`;
    const query = new URLSearchParams();
    query.set('token', this._token ?? '');
    query.set('client_id', this.clientId);
    query.set('version', String(PROTOCOL_VERSION));
    if (this._hasSynced && !this._forceSnapshot) {
      query.set('since', String(this._version));
    }
    url.search = query.toString();
    url.hash = '';
    return url.toString();
  }

  async _openSocket() {
    const serial = ++this._openSerial;
    this._reconnectTimer = this._clearTimer(this._reconnectTimer);
    if (this._socket !== null) {
      this._dropSocket(CLOSE_NORMAL, 'replaced by a new connection');
    }
    if (this._token === null) {
      const fetched = await this._fetchToken(serial);
      if (!fetched) {
        return;
      }
    }

    let url;
    let socket;
    try {
      url = this._buildUrl();
      this._log('opening', redactToken(url));
      socket = new this._WebSocket(url);
    } catch (error) {
      this._fail(`could not open a WebSocket to ${this._baseUrl}: ${error.message}`);
      return;
    }
    this._socket = socket;
    this._awaitingSync = true;
    this._queuedFrames = [];
    socket.onopen = () => this._handleOpen(socket);
    socket.onmessage = (event) => this._handleFrame(socket, event.data);
    socket.onerror = () => this._log('socket error on', redactToken(url));
    socket.onclose = (event) => this._handleClose(socket, event.code, event.reason);
    if (this._connectTimeout > 0) {
      this._connectTimer = this._setTimer(() => {
        this._connectTimer = null;
        this._handleConnectionLost(socket, `no document state within ${this._connectTimeout} ms`);
      }, this._connectTimeout);
    }
  }

  /**
   * Fetches a token from the tokenProvider; returns whether the attempt that started
   * it (`serial`) should go on.
   */
  async _fetchToken(serial) {
    let token;
    try {
      token = await this._tokenProvider();
    } catch (error) {
      if (serial !== this._openSerial) {
        return false;
      }
      this._emitError('token_failed', `tokenProvider failed: ${error?.message ?? error}`);
      this._scheduleReconnect(`tokenProvider failed: ${error?.message ?? error}`);
      return false;
    }
    if (serial !== this._openSerial) {
      return false;
    }
    if (typeof token !== 'string' || token === '') {
      this._fail(`tokenProvider returned ${shortRepr(token)} instead of a token string`);
      return false;
    }
    this._token = token;
    this._scheduleTokenRefresh();
    return true;
  }

  /** Schedules a reconnect with a fresh token shortly before the current one expires. */
  _scheduleTokenRefresh() {
    this._tokenTimer = this._clearTimer(this._tokenTimer);
    if (this._tokenProvider === null) {
      return;
    }
    const expiry = tokenExpiry(this._token);
    if (expiry === null) {
      return;
    }
    const remaining = expiry - Date.now();
    const delay = Math.max(0, remaining - Math.min(TOKEN_REFRESH_MARGIN, remaining * 0.1));
    if (delay > MAX_TIMER_DELAY) {
      // setTimeout() fires at once for longer delays, so wait in steps.
      this._tokenTimer = this._setTimer(() => {
        this._tokenTimer = null;
        this._scheduleTokenRefresh();
      }, MAX_TIMER_DELAY);
      return;
    }
    this._tokenTimer = this._setTimer(() => {
      this._tokenTimer = null;
      this._refreshToken();
    }, delay);
  }

  /**
   * Fetches a fresh token and reconnects with it, because the server closes a socket
   * with 4001 once its token expires. When the client is not connected, the next
   * connection attempt fetches the token instead.
   */
  async _refreshToken() {
    if (this._state !== 'connected') {
      this._token = null;
      return;
    }
    this._log('refreshing the access token before it expires');
    const serial = this._openSerial;
    let token;
    try {
      token = await this._tokenProvider();
    } catch (error) {
      // The current token stays in use. When it expires, the server closes the
      // socket with 4001 and the reconnect calls the provider again.
      this._emitError('token_failed', `tokenProvider failed: ${error?.message ?? error}`);
      return;
    }
    if (typeof token !== 'string' || token === '') {
      this._emitError('token_failed', `tokenProvider returned ${shortRepr(token)} instead of a token string`);
      return;
    }
    if (serial !== this._openSerial || this._state !== 'connected') {
      // A reconnect or close() happened meanwhile. The token is still the newest.
      this._token = token;
      return;
    }
    this._token = token;
    this._scheduleTokenRefresh();
    this._dropSocket(CLOSE_NORMAL, 'refreshing the access token');
    this._setState('reconnecting', 'refreshing the access token');
    this._openSocket();
  }

  /** Detaches and closes the current socket, and stops its timers. */
  _dropSocket(code, reason) {
    const socket = this._socket;
    this._socket = null;
    this._awaitingSync = false;
    this._queuedFrames = [];
    this._stopHeartbeat();
    this._connectTimer = this._clearTimer(this._connectTimer);
    this._resendTimer = this._clearTimer(this._resendTimer);
    if (this._inflight !== null) {
      this._inflight.socket = null;
    }
    if (socket !== null) {
      socket.onopen = null;
      socket.onmessage = null;
      socket.onerror = null;
      socket.onclose = null;
      this._closeSocket(socket, code, reason);
    }
  }

  _handleOpen(socket) {
    if (socket !== this._socket) {
      return;
    }
    this._log('socket open');
    this._startHeartbeat();
  }

  _handleClose(socket, code, reason) {
    if (socket !== this._socket) {
      return;
    }
    const text = `closed with code ${code}${reason ? ` (${reason})` : ''}`;
    this._log('socket', text);
    this._dropSocket(CLOSE_NORMAL, reason);

    if (
      code === CLOSE_BAD_REQUEST ||
      code === CLOSE_FORBIDDEN ||
      code === CLOSE_NOT_FOUND ||
      code === CLOSE_BY_OPERATOR
    ) {
      this._fail(text);
      return;
    }
    if (code === CLOSE_UNAUTHORIZED) {
      if (this._tokenProvider === null) {
        this._fail(`${text}; pass a tokenProvider to reconnect with a fresh token`);
        return;
      }
      // The first 4001 reconnects at once. A repeat before a successful sync backs
      // off, so a provider that keeps returning a bad token does not spin.
      this._token = null;
      this._scheduleReconnect(text, this._attempt === 0 ? { delay: 0 } : {});
      return;
    }
    if (code === CLOSE_MESSAGE_TOO_BIG && this._inflight !== null) {
      // The in-flight edit is the only large message this client sends, and
      // resending it would close the socket again.
      const { messageId } = this._inflight;
      this._discardPendingEdits(
        new Error(`edit ${messageId} was larger than the server's maximum message size`),
      );
      this._emitError(
        'message_too_big',
        `the server closed the socket because edit ${messageId} was too large; ` +
          'the edit and later local edits were discarded',
        messageId,
      );
    }
    this._setState('disconnected', text, { code });
    this._scheduleReconnect(text);
  }

  /** Drops `socket` after a timeout and reconnects with backoff. */
  _handleConnectionLost(socket, reason) {
    if (socket !== this._socket) {
      return;
    }
    this._log('connection lost:', reason);
    this._dropSocket(CLOSE_NORMAL, reason);
    this._setState('disconnected', reason);
    this._scheduleReconnect(reason);
  }

  /** Returns a delay in ms drawn uniformly from [0, min(maxDelay, baseDelay * 2 ** exponent)). */
  _backoffDelay(exponent) {
    const { baseDelay, maxDelay } = this._reconnect;
    return Math.random() * Math.min(maxDelay, baseDelay * 2 ** exponent);
  }

  /**
   * Schedules the next connection attempt after `delay` ms, by default with
   * exponential backoff and full jitter, or moves to failed after
   * reconnect.maxAttempts attempts without a sync.
   */
  _scheduleReconnect(reason, { delay = this._backoffDelay(this._attempt) } = {}) {
    const { maxAttempts } = this._reconnect;
    if (this._attempt >= maxAttempts) {
      this._fail(`gave up after ${maxAttempts} reconnect attempts; last error: ${reason}`);
      return;
    }
    this._attempt += 1;
    this._setState('reconnecting', reason, { attempt: this._attempt, delay });
    this._log(`reconnect attempt ${this._attempt} of ${maxAttempts} in ${Math.round(delay)} ms`);
    this._reconnectTimer = this._setTimer(() => {
      this._reconnectTimer = null;
      this._openSocket();
    }, delay);
  }

  /**
   * Reconnects without `since`, so the server sends a snapshot that the pending edits
   * are rebased on. Used when the local version can no longer be trusted.
   */
  _resynchronize(reason) {
    this._log('resynchronizing from a snapshot:', reason);
    // The first resync in a minute is immediate. Later ones back off, so a state
    // that keeps failing does not reconnect in a tight loop.
    const now = Date.now();
    if (now - this._lastResyncAt > RESYNC_BACKOFF_RESET) {
      this._consecutiveResyncs = 0;
    }
    this._lastResyncAt = now;
    const delay = this._consecutiveResyncs === 0 ? 0 : this._backoffDelay(this._consecutiveResyncs);
    this._consecutiveResyncs += 1;
    this._forceSnapshot = true;
    this._dropSocket(CLOSE_NORMAL, 'resynchronizing');
    this._scheduleReconnect(reason, { delay });
  }

  _fail(reason) {
    this._clearAllTimers();
    this._openSerial += 1;
    this._dropSocket(CLOSE_NORMAL, 'client failed');
    this._clearPresence();
    this._setState('failed', reason);
    const error = new Error(`connection failed: ${reason}`);
    this._rejectConnectWaiters(error);
    this._rejectFlushWaiters(error);
  }

  _rejectConnectWaiters(error) {
    const waiters = this._connectWaiters;
    this._connectWaiters = [];
    for (const { reject } of waiters) {
      reject(error);
    }
  }

  _rejectFlushWaiters(error) {
    const waiters = this._flushWaiters;
    this._flushWaiters = [];
    for (const { reject } of waiters) {
      reject(error);
    }
  }

  _resolveFlushWaitersIfIdle() {
    if (this.hasPendingEdits) {
      return;
    }
    const waiters = this._flushWaiters;
    this._flushWaiters = [];
    for (const { resolve } of waiters) {
      resolve();
    }
  }

  // Heartbeat

  _startHeartbeat() {
    this._stopHeartbeat();
    if (this._heartbeatInterval <= 0) {
      return;
    }
    this._heartbeatTimer = setInterval(() => this._sendPing(), this._heartbeatInterval);
  }

  _stopHeartbeat() {
    if (this._heartbeatTimer !== null) {
      clearInterval(this._heartbeatTimer);
      this._heartbeatTimer = null;
    }
    this._pongTimer = this._clearTimer(this._pongTimer);
  }

  /**
   * Sends a ping and starts the pong timeout. A socket that is closing gets no ping,
   * but the same timeout, because a close handshake that never completes would
   * otherwise leave the client waiting without a close event.
   */
  _sendPing() {
    const socket = this._socket;
    if (socket === null || socket.readyState === SOCKET_CONNECTING) {
      return;
    }
    let reason = `no pong within ${this._heartbeatTimeout} ms`;
    if (socket.readyState === SOCKET_OPEN) {
      this._send({ type: 'system', event: 'ping', data: { timestamp: Date.now() } });
    } else {
      reason = `the socket did not finish closing within ${this._heartbeatTimeout} ms`;
    }
    if (this._pongTimer === null && this._heartbeatTimeout > 0) {
      this._pongTimer = this._setTimer(() => {
        this._pongTimer = null;
        this._handleConnectionLost(socket, reason);
      }, this._heartbeatTimeout);
    }
  }

  _handlePong(data) {
    this._pongTimer = this._clearTimer(this._pongTimer);
    if (Number.isFinite(data.timestamp)) {
      this._emit('heartbeat', Date.now() - data.timestamp);
    }
  }

  // Frames

  _send(message) {
    const frame = JSON.stringify(message);
    this._log('send', frame);
    this._socket.send(frame);
  }

  _handleFrame(socket, raw) {
    if (socket !== this._socket) {
      return;
    }
    this._log('receive', raw);
    if (typeof raw !== 'string') {
      this._emitError('invalid_json', 'the server sent a binary frame');
      return;
    }
    let message;
    try {
      message = JSON.parse(raw);
    } catch (error) {
      this._emitError('invalid_json', `the server sent a frame that is not JSON: ${error.message}`);
      return;
    }
    if (message === null || typeof message !== 'object') {
      this._emitError('invalid_message', 'the server sent a frame that is not a JSON object');
      return;
    }
    this._dispatch(message);
  }

  _dispatch(message) {
    const { type, event } = message;
    const data = message.data ?? {};
    if (
      this._awaitingSync &&
      ((type === 'operation' && event === 'document_edit') ||
        (type === 'system' && event === 'operation_ack') ||
        type === 'presence')
    ) {
      // Applied once the catch_up or document_state arrives. Presence events wait
      // too, because their selections may refer to a version not received yet.
      this._queuedFrames.push(message);
      return;
    }
    if (type === 'operation' && event === 'document_edit') {
      this._handleRemoteEdit(message);
    } else if (type === 'presence') {
      this._handlePresenceEvent(event, data);
    } else if (type !== 'system') {
      this._log(`ignoring ${type}/${event}`);
    } else if (event === 'document_state') {
      this._handleDocumentState(data);
    } else if (event === 'catch_up') {
      this._handleCatchUp(data);
    } else if (event === 'operation_ack') {
      this._handleAck(data);
    } else if (event === 'error') {
      this._handleErrorFrame(data);
    } else if (event === 'pong') {
      this._handlePong(data);
    } else if (event === 'ping') {
      this._send({ type: 'system', event: 'pong', data: { timestamp: data.timestamp ?? null } });
    } else if (event === 'rate_limited') {
      this._handleRateLimited(data, message.message_id ?? data.message_id ?? null);
    } else {
      this._log(`ignoring system/${event}`);
    }
  }

  // Document sync

  _handleDocumentState(data) {
    if (typeof data.content !== 'string' || !Number.isSafeInteger(data.version)) {
      this._emitError('invalid_message', 'document_state without content or version');
      return;
    }
    // Operations before a snapshot cannot move selections to versions after it.
    this._recentOperations.clear();
    if (!this._hasSynced) {
      const previousText = this._text;
      this._text = data.content;
      this._confirmedText = data.content;
      this._version = data.version;
      if (previousText !== data.content) {
        this._emitChange(diff(previousText, data.content), 'sync');
      }
    } else {
      this._rebaseOnSnapshot(data);
    }
    this._forceSnapshot = false;
    this._finishSync(data);
  }

  /**
   * Rebases the pending edits on a snapshot. The in-flight edit is dropped if
   * `acknowledged` lists it, and the pending edits are then rebased over the
   * difference between the last confirmed text and the snapshot's content.
   */
  _rebaseOnSnapshot(data) {
    let base = this._confirmedText;
    const inflight = this._inflight;
    if (inflight !== null) {
      const acknowledged = Array.isArray(data.acknowledged) ? data.acknowledged : [];
      const entry = acknowledged.find((item) => item?.message_id === inflight.messageId);
      if (entry !== undefined) {
        base = this._applyOrKeep(base, inflight.ops);
        this._inflight = null;
        this._unavailableAttempts = 0;
        this._emit('ack', { messageId: inflight.messageId, version: entry.version });
      }
    }
    this._rebasePending(base, data.content, data.version);
  }

  /** Returns apply(text, ops), or text unchanged when ops does not fit it. */
  _applyOrKeep(text, ops) {
    try {
      return apply(text, ops);
    } catch (error) {
      this._log('an acknowledged edit does not fit the confirmed text:', error.message);
      return text;
    }
  }

  /**
   * Moves the client to the server text `serverText` at `serverVersion`. `base` is the
   * text that the in-flight edit and the buffer apply to. The pending edits are
   * transformed over diff(base, serverText), as if that difference were one remote
   * operation committed before them, and the local text becomes the server text with
   * the pending edits applied.
   */
  _rebasePending(base, serverText, serverVersion) {
    let remote = diff(base, serverText);
    const inflight = this._inflight;
    if (inflight !== null) {
      const inflightOps = transform(inflight.ops, remote, 'right');
      remote = transform(remote, inflight.ops, 'left');
      // The server may hold an earlier form of this edit under the same message id,
      // so a duplicate acknowledgement of it no longer shows what the server applied.
      inflight.rebased = inflight.rebased || remote.length > 0;
      inflight.ops = inflightOps;
      inflight.socket = null;
    }
    if (this._buffer !== null) {
      const bufferOps = transform(this._buffer, remote, 'right');
      this._buffer = bufferOps.length > 0 ? bufferOps : null;
    }

    let text = serverText;
    if (inflight !== null) {
      text = apply(text, inflight.ops);
    }
    if (this._buffer !== null) {
      text = apply(text, this._buffer);
    }
    const previousText = this._text;
    this._confirmedText = serverText;
    this._version = serverVersion;
    this._text = text;
    if (previousText !== text) {
      this._emitChange(diff(previousText, text), 'sync');
    }
  }

  _handleCatchUp(data) {
    const operations = Array.isArray(data.operations) ? data.operations : [];
    for (const entry of operations) {
      if (!Number.isSafeInteger(entry?.version) || entry.version < this._version) {
        continue;
      }
      if (entry.version > this._version) {
        this._resynchronize(`catch_up skipped from version ${this._version} to ${entry.version}`);
        return;
      }
      const ok = this._applyServerOperation(entry, entry.client_id ?? null, entry.message_id ?? null);
      if (!ok) {
        return;
      }
    }
    if (Number.isSafeInteger(data.version) && data.version !== this._version) {
      this._resynchronize(`catch_up ended at version ${this._version} but the document is at ${data.version}`);
      return;
    }
    this._finishSync(data);
  }

  /** Marks the socket synced, replays frames that arrived meanwhile and sends pending edits. */
  _finishSync(data) {
    this._hasSynced = true;
    this._awaitingSync = false;
    if (Array.isArray(data.presence)) {
      this._replacePresence(data.presence, data.version);
      // Presence events that arrived before this list are older than it.
      this._queuedFrames = this._queuedFrames.filter((message) => message.type !== 'presence');
    }
    if (typeof data.role === 'string') {
      this._role = data.role;
    }
    if (typeof data.title === 'string') {
      this._title = data.title;
    }
    this._attempt = 0;
    this._connectTimer = this._clearTimer(this._connectTimer);
    this._setState('connected', 'document synced');
    this._emit('state', { text: this._text, version: this._version, role: this._role });

    const waiters = this._connectWaiters;
    this._connectWaiters = [];
    for (const { resolve } of waiters) {
      resolve();
    }

    const queued = this._queuedFrames;
    this._queuedFrames = [];
    for (const message of queued) {
      if (this._awaitingSync || this._socket === null) {
        // A replayed frame started another sync; keep the rest for it.
        this._queuedFrames.push(message);
        continue;
      }
      this._dispatch(message);
    }
    this._sendPending();
    this._resendOwnPresence();
    if (this._selectionsStale) {
      // A catch_up or snapshot may have acknowledged the edits that the last
      // cursor_update could not place exactly.
      this._scheduleSelectionsSend();
    }
  }

  _requestSync() {
    if (this._awaitingSync) {
      return;
    }
    this._awaitingSync = true;
    this._send({ type: 'system', event: 'sync', data: { version: this._version } });
    if (this._connectTimeout > 0) {
      const socket = this._socket;
      this._connectTimer = this._clearTimer(this._connectTimer);
      this._connectTimer = this._setTimer(() => {
        this._connectTimer = null;
        this._handleConnectionLost(socket, `no answer to sync within ${this._connectTimeout} ms`);
      }, this._connectTimeout);
    }
  }

  _handleRemoteEdit(message) {
    const version = message.data?.version;
    if (!Number.isSafeInteger(version)) {
      this._emitError('invalid_message', 'document_edit without a version', message.message_id ?? null);
      return;
    }
    if (version < this._version) {
      this._log(`ignoring operation at version ${version}, already at ${this._version}`);
      return;
    }
    if (version > this._version) {
      this._log(`gap: operation at version ${version}, expected ${this._version}`);
      this._requestSync();
      this._queuedFrames.push(message);
      return;
    }
    if (this._applyServerOperation(message.data, message.client_id ?? null, message.message_id ?? null)) {
      this._sendPending();
    }
  }

  /**
   * Applies one committed operation at the current version: the acknowledgement of
   * the in-flight edit when its ids match, otherwise a remote operation. Returns false
   * when the operation did not fit and a resync started.
   */
  _applyServerOperation(data, clientId, messageId) {
    const ops = data?.operation?.ops;
    const inflight = this._inflight;
    if (inflight !== null && clientId === this.clientId && messageId === inflight.messageId) {
      return this._acknowledgeWithServerOperation(data.version, ops);
    }

    let committed;
    let remote;
    let inflightOps = null;
    let bufferOps = null;
    let confirmedText;
    let text;
    try {
      committed = normalize(ops);
      remote = committed;
      confirmedText = apply(this._confirmedText, remote);
      if (inflight !== null) {
        inflightOps = transform(inflight.ops, remote, 'right');
        remote = transform(remote, inflight.ops, 'left');
      }
      if (this._buffer !== null) {
        bufferOps = transform(this._buffer, remote, 'right');
        remote = transform(remote, this._buffer, 'left');
      }
      text = apply(this._text, remote);
    } catch (error) {
      this._resynchronize(`operation at version ${data?.version} does not fit: ${error.message}`);
      return false;
    }

    this._confirmedText = confirmedText;
    if (inflight !== null) {
      inflight.ops = inflightOps;
    }
    if (this._buffer !== null) {
      this._buffer = bufferOps.length > 0 ? bufferOps : null;
    }
    this._text = text;
    this._version = data.version + 1;
    this._recordOperation(data.version, committed);
    this._emit('operation', {
      ops,
      version: data.version,
      user: data.user ?? null,
      clientId,
      messageId,
      timestamp: data.timestamp ?? null,
      appliedOps: remote,
    });
    if (remote.length > 0) {
      this._emitChange(remote, 'remote');
    }
    return true;
  }

  /**
   * Acknowledges the in-flight edit with the operation the server stored for it.
   * Returns false when that operation does not fit and a resync started.
   */
  _acknowledgeWithServerOperation(version, ops) {
    const inflight = this._inflight;
    let confirmedText;
    let stored;
    try {
      stored = normalize(ops);
      confirmedText = apply(this._confirmedText, stored);
    } catch (error) {
      this._resynchronize(`own operation ${inflight.messageId} does not fit the confirmed text: ${error.message}`);
      return false;
    }
    const previousConfirmed = this._confirmedText;
    this._recordOperation(version, stored);
    this._completeInflight(version);
    if (JSON.stringify(stored) === JSON.stringify(inflight.ops)) {
      this._confirmedText = confirmedText;
    } else {
      // The server stored another form of the edit (it was rebased on a snapshot
      // here after the first copy was sent), so the buffer is rebased on the
      // server's text.
      const believed = this._applyOrKeep(previousConfirmed, inflight.ops);
      this._rebasePending(believed, confirmedText, this._version);
    }
    return true;
  }

  /** Marks the in-flight edit as stored at `version` and moves the version past it; the caller updates confirmedText. */
  _completeInflight(version) {
    const { messageId } = this._inflight;
    this._inflight = null;
    this._unavailableAttempts = 0;
    this._resendTimer = this._clearTimer(this._resendTimer);
    this._version = version + 1;
    this._emit('ack', { messageId, version });
  }

  _handleAck(data) {
    const inflight = this._inflight;
    if (inflight === null || data.message_id !== inflight.messageId) {
      this._log(`ignoring ack for ${data.message_id}, which is not in flight`);
      return;
    }
    if (data.version !== this._version || (data.duplicate === true && inflight.rebased)) {
      // The server stored an earlier copy of the edit: at another version than this
      // client expects, or before the edit was rebased here. Either way the local
      // text may differ from the server's, so the client resyncs from a snapshot.
      this._confirmedText = this._applyOrKeep(this._confirmedText, inflight.ops);
      const expected = this._version;
      this._completeInflight(data.version);
      const reason =
        data.version === expected
          ? `edit ${inflight.messageId} was rebased here but acknowledged as a duplicate of its first copy`
          : `edit ${inflight.messageId} was acknowledged at version ${data.version} but version ${expected} was expected`;
      this._resynchronize(reason);
      return;
    }
    this._confirmedText = apply(this._confirmedText, inflight.ops);
    this._recordOperation(data.version, inflight.ops);
    this._completeInflight(data.version);
    this._sendPending();
    if (this._selectionsStale) {
      // The last cursor_update placed the caret as if unacknowledged text were not
      // there yet. Now that the text has a version, send the exact position.
      this._scheduleSelectionsSend();
    }
  }

  // Local edits

  /** Inserts `text` at code-point `position` and returns the applied operation. */
  insert(position, text) {
    this._checkPosition('position', position, codePointLength(this._text));
    if (typeof text !== 'string') {
      throw new TypeError(`text must be a string, got ${typeName(text)}`);
    }
    if (text === '') {
      return [];
    }
    return this.submit(position > 0 ? [{ retain: position }, { insert: text }] : [{ insert: text }]);
  }

  /** Deletes `length` code points from `position` and returns the applied operation. */
  delete(position, length) {
    const textLength = codePointLength(this._text);
    this._checkPosition('position', position, textLength);
    this._checkPosition('length', length, textLength - position);
    if (length === 0) {
      return [];
    }
    return this.submit(position > 0 ? [{ retain: position }, { delete: length }] : [{ delete: length }]);
  }

  /**
   * Applies a local operation to `text` at once and queues it for the server.
   * Throws InvalidOperation if it is malformed or does not fit the text, and Error
   * before the first sync or when the role cannot edit. Returns the normalized operation.
   */
  submit(ops) {
    if (!this._hasSynced) {
      throw new Error('cannot edit before the document is synced; await connect() first');
    }
    if (!EDIT_ROLES.has(this._role)) {
      throw new Error(`role ${shortRepr(this._role)} cannot edit this document; an owner or editor role is required`);
    }
    const normalized = normalize(ops);
    if (normalized.length === 0) {
      return normalized;
    }
    this._text = apply(this._text, normalized);
    this._buffer = this._buffer === null ? normalized : compose(this._buffer, normalized);
    if (this._buffer.length === 0) {
      this._buffer = null;
    }
    this._emitChange(normalized, 'local');
    this._sendPending();
    this._noteActivity();
    return normalized;
  }

  _checkPosition(name, value, max) {
    if (!Number.isSafeInteger(value) || value < 0 || value > max) {
      throw new RangeError(`${name} must be an integer from 0 to ${max}, got ${shortRepr(value)}`);
    }
  }

  /** Resolves when every local edit is acknowledged; rejects if they are discarded or the client fails or closes. */
  flush() {
    if (!this.hasPendingEdits) {
      return Promise.resolve();
    }
    if (this._state === 'failed' || this._state === 'disconnected' || this._state === 'closing') {
      return Promise.reject(
        new Error(`cannot flush while the connection is ${this._state}; call connect() first`),
      );
    }
    return new Promise((resolve, reject) => {
      this._flushWaiters.push({ resolve, reject });
    });
  }

  /** Sends the in-flight edit if this socket has not carried it, or moves the buffer in flight. */
  _sendPending() {
    if (this._socket === null || this._awaitingSync || this._state !== 'connected') {
      return;
    }
    if (this._inflight === null && this._buffer !== null) {
      const [first, rest] = splitAtInsertLimit(this._buffer, this._maxInsertLength);
      this._inflight = { ops: first, messageId: randomId(), socket: null, rejections: 0, rebased: false };
      this._buffer = rest;
    }
    const inflight = this._inflight;
    if (inflight === null) {
      this._resolveFlushWaitersIfIdle();
      return;
    }
    if (inflight.socket === this._socket || this._resendTimer !== null) {
      return;
    }
    inflight.socket = this._socket;
    this._send({
      type: 'operation',
      event: 'document_edit',
      data: { operation: { ops: inflight.ops }, version: this._version },
      client_id: this.clientId,
      message_id: inflight.messageId,
    });
  }

  /** Resends the in-flight edit after `delay` ms, as the server asked for a later retry. */
  _scheduleResend(delay) {
    this._resendTimer = this._clearTimer(this._resendTimer);
    if (this._inflight !== null) {
      this._inflight.socket = null;
    }
    this._resendTimer = this._setTimer(() => {
      this._resendTimer = null;
      this._sendPending();
    }, delay);
  }

  /** Drops the in-flight edit and the buffer, and resets the local text to the confirmed text. */
  _discardPendingEdits(error) {
    this._inflight = null;
    this._buffer = null;
    this._resendTimer = this._clearTimer(this._resendTimer);
    const previousText = this._text;
    this._text = this._confirmedText;
    if (previousText !== this._text) {
      this._emitChange(diff(previousText, this._text), 'sync');
    }
    this._rejectFlushWaiters(error);
  }

  _handleErrorFrame(data) {
    const messageId = data.message_id ?? null;
    const code = data.code ?? 'error';
    const message = data.message ?? '';
    this._emit('error', { code, message, messageId });

    const inflight = this._inflight;
    if (inflight === null || messageId !== inflight.messageId) {
      return;
    }
    if (code === 'unavailable') {
      const { baseDelay, maxDelay } = this._reconnect;
      const ceiling = Math.min(maxDelay, baseDelay * 2 ** this._unavailableAttempts);
      this._unavailableAttempts += 1;
      this._scheduleResend(ceiling / 2 + (Math.random() * ceiling) / 2);
      return;
    }
    // The server rejected the edit and did not apply it. A snapshot may show that the
    // local state was out of date (invalid_operation, version_ahead), so the first
    // rejection rebases the pending edits on one. A forbidden edit or a second
    // rejection of the same edit discards the pending edits.
    if (code === 'forbidden' || inflight.rejections >= 1) {
      this._discardPendingEdits(new Error(`edit ${messageId} was rejected: ${code}: ${message}`));
      if (code !== 'forbidden') {
        this._resynchronize(`edit ${messageId} was rejected twice: ${code}`);
      }
      return;
    }
    inflight.rejections += 1;
    this._resynchronize(`edit ${messageId} was rejected: ${code}`);
  }

  _handleRateLimited(data, messageId) {
    const retryAfter = data.retry_after ?? data.retryAfter ?? null;
    this._emit('rate_limited', { retryAfter, message: data.message ?? '' });
    if (this._inflight !== null && messageId === this._inflight.messageId) {
      // The rate-limited edit was not applied; retry_after is in milliseconds.
      this._scheduleResend(Number.isFinite(retryAfter) ? retryAfter : 1000);
    }
  }

  // Presence

  /**
   * Sets this client's selections: a list of {anchor, head} code-point positions in
   * `text`, where head is the caret, or an empty list for no cursor. The client sends
   * at most one cursor_update per 50 ms, and the last call's selections always go
   * out. They are sent again after every reconnect. Throws TypeError or RangeError
   * for an invalid list.
   */
  setSelections(selections) {
    if (!Array.isArray(selections)) {
      throw new TypeError(`selections must be an array of {anchor, head}, got ${typeName(selections)}`);
    }
    if (selections.length > MAX_SELECTIONS) {
      throw new RangeError(`at most ${MAX_SELECTIONS} selections are allowed, got ${selections.length}`);
    }
    const length = codePointLength(this._text);
    const copies = selections.map((selection, index) => {
      if (selection === null || typeof selection !== 'object') {
        throw new TypeError(`selection ${index} must be an object with anchor and head, got ${shortRepr(selection)}`);
      }
      this._checkPosition(`selection ${index} anchor`, selection.anchor, length);
      this._checkPosition(`selection ${index} head`, selection.head, length);
      return { anchor: selection.anchor, head: selection.head };
    });
    this._selections = copies;
    this._noteActivity();
    this._scheduleSelectionsSend();
  }

  /**
   * Sets this client's activity to 'active', 'idle' or 'away' and sends it when it
   * changed. While the activity is active, the client switches to idle by itself
   * after `idleTimeout` ms without another sign of activity.
   */
  setActivity(state) {
    if (!ACTIVITY_STATES.has(state)) {
      throw new RangeError(`activity must be one of ${[...ACTIVITY_STATES].join(', ')}, got ${shortRepr(state)}`);
    }
    this._activitySet = true;
    this._restartIdleTimer(state);
    if (state === this._activity) {
      return;
    }
    this._activity = state;
    if (this._canSendPresence()) {
      this._send({ type: 'presence', event: 'activity', data: { state } });
    }
  }

  /** Moves an idle client back to active after a local edit or selection change. */
  _noteActivity() {
    if (this._activity === 'idle') {
      this.setActivity('active');
    } else {
      this._restartIdleTimer(this._activity);
    }
  }

  _restartIdleTimer(state) {
    this._idleTimer = this._clearTimer(this._idleTimer);
    const running = this._state !== 'disconnected' && this._state !== 'failed' && this._state !== 'closing';
    if (state !== 'active' || this.idleTimeout <= 0 || !running) {
      return;
    }
    this._idleTimer = this._setTimer(() => {
      this._idleTimer = null;
      this.setActivity('idle');
    }, Math.min(this.idleTimeout, MAX_TIMER_DELAY));
  }

  _canSendPresence() {
    return this._socket !== null && !this._awaitingSync && this._state === 'connected';
  }

  /** Sends the selections now if the interval since the last send has passed, or when it has. */
  _scheduleSelectionsSend() {
    if (this._selectionsTimer !== null) {
      return;
    }
    const wait = this._lastSelectionsSentAt + SELECTION_SEND_INTERVAL - Date.now();
    if (wait <= 0) {
      this._sendSelections();
      return;
    }
    this._selectionsTimer = this._setTimer(() => {
      this._selectionsTimer = null;
      this._sendSelections();
    }, wait);
  }

  /**
   * Sends the selections at the current version. Positions in text that the server
   * has not acknowledged are in no version, so they are sent as the start of that
   * text. Once the acknowledgement arrives, the selections are sent again.
   */
  _sendSelections() {
    if (this._selections === null || !this._canSendPresence()) {
      return;
    }
    const confirmedLength = codePointLength(this._confirmedText);
    const selections = mapSelections(this._selections, (position) => {
      let moved = position;
      if (this._buffer !== null) {
        moved = positionBeforeOperation(moved, this._buffer);
      }
      if (this._inflight !== null) {
        moved = positionBeforeOperation(moved, this._inflight.ops);
      }
      return Math.min(moved, confirmedLength);
    });
    this._selectionsStale = this.hasPendingEdits;
    const data = { selections, version: this._version };
    const frame = JSON.stringify(data);
    if (frame === this._lastSelectionsFrame) {
      return;
    }
    this._lastSelectionsFrame = frame;
    this._lastSelectionsSentAt = Date.now();
    this._send({ type: 'presence', event: 'cursor_update', data });
  }

  /** Sends the selections and activity on a new socket, where the server starts without them. */
  _resendOwnPresence() {
    if (this._socket === this._presenceSocket || !this._canSendPresence()) {
      return;
    }
    this._presenceSocket = this._socket;
    this._lastSelectionsFrame = null;
    if (this._activitySet) {
      this._send({ type: 'presence', event: 'activity', data: { state: this._activity } });
    }
    if (this._selections !== null) {
      this._selectionsTimer = this._clearTimer(this._selectionsTimer);
      this._sendSelections();
    }
    if (this._idleTimer === null) {
      this._restartIdleTimer(this._activity);
    }
  }

  /** Stores a committed operation by its version and drops the oldest one kept. */
  _recordOperation(version, ops) {
    this._recentOperations.set(version, ops);
    this._recentOperations.delete(version - RECENT_OPERATIONS_LIMIT);
  }

  /**
   * Moves selections that refer to the server's document at `version` into the local
   * text: over the committed operations this client applied since then, then over its
   * unacknowledged edits. Another client's caret stays before text inserted exactly
   * at it. Positions are clamped into the local text.
   */
  _importSelections(selections, version) {
    const committed = [];
    let usable = Number.isSafeInteger(version) && version <= this._version;
    for (let next = version; usable && next < this._version; next += 1) {
      const ops = this._recentOperations.get(next);
      if (ops === undefined) {
        usable = false;
      } else {
        committed.push(ops);
      }
    }
    if (!usable) {
      // NOTE: without the operations in between, the positions can be off by the
      // length of those edits until the client sends its next cursor_update.
      this._log(`selections at version ${version} cannot be moved to version ${this._version}; clamping them`);
      committed.length = 0;
    }
    const pending = [];
    if (this._inflight !== null) {
      pending.push(this._inflight.ops);
    }
    if (this._buffer !== null) {
      pending.push(this._buffer);
    }
    const confirmedLength = codePointLength(this._confirmedText);
    const length = codePointLength(this._text);
    return mapSelections(readSelections(selections), (position) => {
      let moved = position;
      for (const ops of committed) {
        moved = transformPosition(moved, ops, false);
      }
      moved = Math.min(moved, confirmedLength);
      for (const ops of pending) {
        moved = transformPosition(moved, ops, false);
      }
      return Math.min(moved, length);
    });
  }

  /** Moves every stored selection over an operation that changed `text`, then emits the change. */
  _emitChange(ops, origin) {
    const length = codePointLength(this._text);
    const move = (own) => (position) => Math.min(transformPosition(position, ops, own), length);
    if (this._selections !== null) {
      // This client's own caret moves after its own insert.
      this._selections = mapSelections(this._selections, move(origin === 'local'));
    }
    let moved = false;
    for (const person of this._people.values()) {
      for (const client of person.clients.values()) {
        if (client.selections.length > 0) {
          client.selections = mapSelections(client.selections, move(false));
          moved = true;
        }
      }
    }
    this._emit('change', { ops, text: this._text, origin });
    if (moved) {
      this._emitPresence('change', null);
    }
  }

  /** Replaces the presence with a document_state or catch_up `presence` list at `version`. */
  _replacePresence(list, version) {
    this._people = new Map();
    for (const person of list) {
      for (const client of Array.isArray(person?.clients) ? person.clients : []) {
        this._addClient({
          ...client,
          user_id: person.user_id,
          display_name: person.display_name,
          color: person.color,
          version,
        });
      }
    }
    this._emitPresence('sync', null);
  }

  /** Adds or replaces one client from a join event or a presence list entry; returns whether it was added. */
  _addClient(data) {
    const clientId = data.client_id;
    if (typeof clientId !== 'string' || clientId === this.clientId || data.user_id === undefined) {
      return false;
    }
    this._removeClient(clientId);
    let person = this._people.get(data.user_id);
    if (person === undefined) {
      person = { userId: data.user_id, displayName: '', color: null, clients: new Map() };
      this._people.set(data.user_id, person);
    }
    if (typeof data.display_name === 'string') {
      person.displayName = data.display_name;
    }
    if (typeof data.color === 'string') {
      person.color = data.color;
    }
    person.clients.set(clientId, {
      clientId,
      selections: this._importSelections(data.selections, data.version),
      activity: ACTIVITY_STATES.has(data.activity) ? data.activity : 'active',
    });
    return true;
  }

  /** Removes a client, and its user when it was the user's last; returns whether it was listed. */
  _removeClient(clientId) {
    for (const [userId, person] of this._people) {
      if (person.clients.delete(clientId)) {
        if (person.clients.size === 0) {
          this._people.delete(userId);
        }
        return true;
      }
    }
    return false;
  }

  _findClient(clientId) {
    for (const person of this._people.values()) {
      const client = person.clients.get(clientId);
      if (client !== undefined) {
        return client;
      }
    }
    return undefined;
  }

  _handlePresenceEvent(event, data) {
    const clientId = data.client_id;
    if (typeof clientId !== 'string' || clientId === this.clientId) {
      return;
    }
    let changed = false;
    if (event === 'join') {
      changed = this._addClient(data);
    } else if (event === 'leave') {
      changed = this._removeClient(clientId);
    } else if (event === 'cursor_update' || event === 'activity') {
      const client = this._findClient(clientId);
      if (client === undefined) {
        this._log(`ignoring presence/${event} of client ${clientId}, which has not joined`);
        return;
      }
      if (event === 'cursor_update') {
        client.selections = this._importSelections(data.selections, data.version);
        changed = true;
      } else if (ACTIVITY_STATES.has(data.state) && data.state !== client.activity) {
        client.activity = data.state;
        changed = true;
      }
    } else {
      this._log(`ignoring presence/${event}`);
    }
    if (changed) {
      this._emitPresence(event, clientId);
    }
  }

  _clearPresence() {
    if (this._people.size === 0) {
      return;
    }
    this._people = new Map();
    this._emitPresence('sync', null);
  }

  _presenceList() {
    return [...this._people.values()].map((person) => ({
      userId: person.userId,
      displayName: person.displayName,
      color: person.color,
      clients: [...person.clients.values()].map((client) => ({
        clientId: client.clientId,
        selections: client.selections.map((selection) => ({ ...selection })),
        activity: client.activity,
      })),
    }));
  }

  _emitPresence(event, clientId) {
    this._emit('presence', { presence: this._presenceList(), event, clientId });
  }
}
