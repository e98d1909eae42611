// End-to-end test of two MateriRealtime clients on a running server.
//
// Runs only when these variables are set, and is skipped otherwise:
//   MATERI_URL          the server's base URL, e.g. ws://127.0.0.1:8000
//   MATERI_DOCUMENT_ID  a document that both tokens may edit
//   MATERI_TOKEN_A      access token of the first client
//   MATERI_TOKEN_B      access token of the second client (may be the same user)
// MATERI_LIVE_EDITS sets the number of random edits (default 300).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { MateriRealtime, codePointLength } from '../../static/materi/realtime.js';

const {
  MATERI_URL: url,
  MATERI_DOCUMENT_ID: documentId,
  MATERI_TOKEN_A: tokenA,
  MATERI_TOKEN_B: tokenB,
  MATERI_LIVE_EDITS: editCountText = '300',
} = process.env;

const configured = Boolean(url && documentId && tokenA && tokenB);
const skip = configured ? false : 'set MATERI_URL, MATERI_DOCUMENT_ID, MATERI_TOKEN_A and MATERI_TOKEN_B';

// Text pieces that differ between code points and UTF-16 units.
const PIECES = ['a', 'b', ' ', '😀', 'e\u0301', '\r\n', 'ж', '🇫🇷'];

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

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Returns a WebSocket subclass that records its instances, so the test can drop one. */
function recordingWebSocket(sockets) {
  return class RecordingWebSocket extends globalThis.WebSocket {
    constructor(address) {
      super(address);
      sockets.push(this);
    }
  };
}

function createClient(token, name, sockets, errors) {
  const client = new MateriRealtime({
    url,
    documentId,
    accessToken: token,
    clientId: `live-${name}-${process.pid}`,
    reconnect: { baseDelay: 50, maxDelay: 500, maxAttempts: 20 },
    WebSocket: recordingWebSocket(sockets),
  });
  client.on('error', (error) => errors.push(`client ${name}: ${error.code}: ${error.message}`));
  return client;
}

function randomEdit(random, client) {
  const length = codePointLength(client.text);
  const position = Math.floor(random() * (length + 1));
  if (position < length && random() < 0.4) {
    client.delete(position, 1 + Math.floor(random() * Math.min(4, length - position)));
  } else {
    const count = 1 + Math.floor(random() * 3);
    let text = '';
    for (let index = 0; index < count; index += 1) {
      text += PIECES[Math.floor(random() * PIECES.length)];
    }
    client.insert(position, text);
  }
}

/** Returns `promise`, or rejects with a message from `describe()` after `timeout` ms. */
function withTimeout(promise, timeout, describe) {
  let timer;
  const expired = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeout} ms: ${describe()}`)), timeout);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

function describeClient(client) {
  return (
    `${client.clientId}: state ${client.connectionState}, version ${client.version}, ` +
    `pending edits ${client.hasPendingEdits}`
  );
}

/** Resolves once `condition()` is true, polling every 20 ms. */
async function waitFor(condition, description, timeout = 20000) {
  const started = Date.now();
  while (!condition()) {
    if (Date.now() - started > timeout) {
      throw new Error(`timed out after ${timeout} ms waiting for ${description}`);
    }
    await sleep(20);
  }
}

test('two clients converge on the live server', { skip, timeout: 120000 }, async () => {
  const editCount = Number.parseInt(editCountText, 10);
  const random = createRandom(Number(process.env.MATERI_LIVE_SEED ?? Date.now() % 100000));
  const socketsA = [];
  const socketsB = [];
  const errors = [];
  const first = createClient(tokenA, 'a', socketsA, errors);
  const second = createClient(tokenB, 'b', socketsB, errors);
  try {
    const describeBoth = () =>
      `${describeClient(first)}; ${describeClient(second)}; errors: ${errors.join(' | ') || 'none'}`;
    await withTimeout(Promise.all([first.connect(), second.connect()]), 30000, describeBoth);
    assert.equal(first.text, second.text, 'both clients start from the same text');

    for (let index = 0; index < editCount; index += 1) {
      randomEdit(random, random() < 0.5 ? first : second);
      if (index === Math.floor(editCount / 3)) {
        // Drop the first client's socket once, so it recovers with since.
        socketsA.at(-1).close();
      }
      // Pauses let acknowledgements and remote operations interleave with edits.
      if (random() < 0.7) {
        await sleep(Math.floor(random() * 6));
      }
    }

    await withTimeout(Promise.all([first.flush(), second.flush()]), 30000, describeBoth);
    await waitFor(
      () => first.version === second.version && !first.hasPendingEdits && !second.hasPendingEdits,
      'both clients to reach the same version',
    ).catch((error) => {
      throw new Error(`${error.message} (${describeBoth()})`);
    });
    assert.equal(first.text, second.text);
    assert.ok(socketsA.length >= 2, 'the first client reconnected');

    // A fresh client sees the server's text, which must match both.
    const observer = createClient(tokenB, 'observer', [], errors);
    try {
      await withTimeout(observer.connect(), 30000, () => describeClient(observer));
      assert.equal(observer.version, first.version);
      assert.equal(observer.text, first.text);
    } finally {
      await observer.close();
    }
    // The server may ask for a resend when a commit loses too many races.
    assert.deepEqual(
      errors.filter((error) => !error.includes(': unavailable: ')),
      [],
    );
  } finally {
    await Promise.all([first.close(), second.close()]);
  }
});
