// Tests of the MateriRealtime client state machine with an injected fake WebSocket.
// Node 20 has a WebSocket client but no server, so the tests play the server's part:
// they read the frames the client sends and deliver frames and closes to it.
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';

import {
  MateriRealtime,
  apply,
  codePointLength,
  compose,
  transform,
} from '../../static/materi/realtime.js';

const TOKEN = 'header.eyJzdWIiOiIxIn0.signature';
const DOCUMENT_ID = '0b6c5a1e-2f4b-4c1e-9a55-8d3e1f0a7b21';

/** Returns a fake WebSocket class whose instances are recorded in `sockets`. */
function createSocketClass() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      this.onopen = null;
      this.onmessage = null;
      this.onclose = null;
      this.onerror = null;
      sockets.push(this);
    }

    send(frame) {
      if (this.readyState !== 1) {
        throw new Error(`send on a socket in readyState ${this.readyState}`);
      }
      this.sent.push(JSON.parse(frame));
    }

    close(code = 1000, reason = '') {
      if (this.readyState >= 2) {
        return;
      }
      this.readyState = 3;
      this.closedWith = { code, reason };
      queueMicrotask(() => this.onclose?.({ code, reason }));
    }

    // Test side.

    open() {
      this.readyState = 1;
      this.onopen?.({});
    }

    receive(message) {
      this.onmessage?.({ data: JSON.stringify(message) });
    }

    serverClose(code, reason = '') {
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }

    params() {
      return new URL(this.url).searchParams;
    }

    edits() {
      return this.sent.filter((message) => message.event === 'document_edit');
    }
  }
  return { FakeWebSocket, sockets };
}

function documentState(content, version, extra = {}) {
  return {
    type: 'system',
    event: 'document_state',
    data: {
      document_id: DOCUMENT_ID,
      title: 'Notes',
      content,
      version,
      role: 'editor',
      acknowledged: [],
      ...extra,
    },
  };
}

function remoteEdit(ops, version, { clientId = 'other', messageId = `m-${version}` } = {}) {
  return {
    type: 'operation',
    event: 'document_edit',
    data: {
      operation: { ops },
      version,
      timestamp: '2026-12-04T10:30:00+00:00',
      user: { id: 2, username: 'ada' },
    },
    client_id: clientId,
    message_id: messageId,
  };
}

function ack(messageId, version, extra = {}) {
  return { type: 'system', event: 'operation_ack', data: { message_id: messageId, version, ...extra } };
}

function catchUp(version, operations) {
  return {
    type: 'system',
    event: 'catch_up',
    data: { document_id: DOCUMENT_ID, title: 'Notes', role: 'editor', version, operations },
  };
}

function catchUpEntry(ops, version, clientId, messageId) {
  return { ...remoteEdit(ops, version).data, client_id: clientId, message_id: messageId };
}

/** Resolves once `condition()` is true, polling every millisecond. */
async function waitFor(condition, description, timeout = 2000) {
  const started = Date.now();
  while (!condition()) {
    if (Date.now() - started > timeout) {
      throw new Error(`timed out waiting for ${description}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

const clients = [];

afterEach(async () => {
  for (const client of clients.splice(0)) {
    await client.close();
  }
});

function createClient(options = {}) {
  const { FakeWebSocket, sockets } = createSocketClass();
  const client = new MateriRealtime({
    accessToken: TOKEN,
    documentId: DOCUMENT_ID,
    url: 'ws://127.0.0.1:8000',
    clientId: 'client-a',
    heartbeatInterval: 0,
    connectTimeout: 0,
    WebSocket: FakeWebSocket,
    ...options,
  });
  clients.push(client);
  return { client, sockets };
}

/** Creates a client and syncs it to `content` at `version`. */
async function createSyncedClient(content = '', version = 0, options = {}) {
  const { client, sockets } = createClient(options);
  const connected = client.connect();
  sockets[0].open();
  sockets[0].receive(documentState(content, version));
  await connected;
  return { client, sockets, socket: sockets[0] };
}

function recordEvents(client, event) {
  const events = [];
  client.on(event, (payload) => events.push(payload));
  return events;
}

describe('connecting', () => {
  test('url has token, client id and version', async () => {
    const { client, sockets } = createClient();
    client.connect().catch(() => {});
    const url = new URL(sockets[0].url);
    assert.equal(url.origin, 'ws://127.0.0.1:8000');
    assert.equal(url.pathname, `/v1/ws/documents/${DOCUMENT_ID}`);
    assert.equal(url.searchParams.get('token'), TOKEN);
    assert.equal(url.searchParams.get('client_id'), 'client-a');
    assert.equal(url.searchParams.get('version'), '1');
    assert.equal(url.searchParams.has('since'), false);
  });

  test('http url and path prefix map to ws', async () => {
    const { client, sockets } = createClient({ url: 'https://127.0.0.1:8443/realtime/' });
    client.connect().catch(() => {});
    const url = new URL(sockets[0].url);
    assert.equal(url.protocol, 'wss:');
    assert.equal(url.pathname, `/realtime/v1/ws/documents/${DOCUMENT_ID}`);
  });

  test('connect resolves with synced state', async () => {
    const { client, sockets } = createClient();
    const states = recordEvents(client, 'connection_state');
    const syncs = recordEvents(client, 'state');
    const connected = client.connect();
    assert.equal(client.connectionState, 'connecting');
    sockets[0].open();
    sockets[0].receive(documentState('Hello 😀', 7));
    await connected;
    assert.equal(client.connectionState, 'connected');
    assert.equal(client.text, 'Hello 😀');
    assert.equal(client.version, 7);
    assert.equal(client.role, 'editor');
    assert.deepEqual(syncs, [{ text: 'Hello 😀', version: 7, role: 'editor' }]);
    assert.deepEqual(
      states.map((event) => event.state),
      ['connecting', 'connected'],
    );
  });

  test('default clientId is a valid random id', () => {
    const { FakeWebSocket } = createSocketClass();
    const options = { accessToken: TOKEN, documentId: DOCUMENT_ID, url: 'ws://127.0.0.1:1', WebSocket: FakeWebSocket };
    const first = new MateriRealtime(options);
    const second = new MateriRealtime(options);
    assert.match(first.clientId, /^[A-Za-z0-9_.:-]{1,64}$/);
    assert.notEqual(first.clientId, second.clientId);
  });

  test('url is required outside a browser', () => {
    const { FakeWebSocket } = createSocketClass();
    assert.throws(
      () => new MateriRealtime({ accessToken: TOKEN, documentId: DOCUMENT_ID, WebSocket: FakeWebSocket }),
      /url is required/,
    );
  });

  test('url defaults to the page location', () => {
    const { FakeWebSocket, sockets } = createSocketClass();
    globalThis.location = { protocol: 'https:', host: 'docs.example.test:8443' };
    try {
      const client = new MateriRealtime({ accessToken: TOKEN, documentId: DOCUMENT_ID, WebSocket: FakeWebSocket });
      clients.push(client);
      client.connect().catch(() => {});
      assert.equal(new URL(sockets[0].url).origin, 'wss://docs.example.test:8443');
    } finally {
      delete globalThis.location;
    }
  });

  test('edits before the first sync throw', () => {
    const { client } = createClient();
    assert.throws(() => client.insert(0, 'x'), /before the document is synced/);
  });

  test('viewer cannot edit', async () => {
    const { client, sockets } = createClient();
    const connected = client.connect();
    sockets[0].open();
    sockets[0].receive(documentState('text', 1, { role: 'viewer' }));
    await connected;
    assert.throws(() => client.insert(0, 'x'), /role "viewer" cannot edit/);
  });

  test('unknown event name throws', () => {
    const { client } = createClient();
    assert.throws(() => client.on('operations', () => {}), /unknown event "operations"/);
  });

  test('on returns an unsubscribe function', async () => {
    const { client, socket } = await createSyncedClient('abc', 0);
    const changes = [];
    const unsubscribe = client.on('change', (event) => changes.push(event));
    client.insert(0, 'x');
    unsubscribe();
    client.insert(0, 'y');
    assert.equal(changes.length, 1);
    assert.equal(socket.edits().length, 1);
  });
});

describe('edits', () => {
  test('one edit in flight, later ones buffered', async () => {
    const { client, socket } = await createSyncedClient('abc', 3);
    client.insert(3, 'd');
    client.insert(4, 'e');
    client.delete(0, 1);
    assert.equal(client.text, 'bcde');

    const edits = socket.edits();
    assert.equal(edits.length, 1);
    assert.deepEqual(edits[0].data, { operation: { ops: [{ retain: 3 }, { insert: 'd' }] }, version: 3 });
    assert.equal(edits[0].client_id, 'client-a');
    assert.ok(edits[0].message_id);

    const acks = recordEvents(client, 'ack');
    socket.receive(ack(edits[0].message_id, 3));
    assert.deepEqual(acks, [{ messageId: edits[0].message_id, version: 3 }]);
    assert.equal(client.version, 4);

    const next = socket.edits();
    assert.equal(next.length, 2);
    assert.deepEqual(next[1].data, {
      operation: { ops: [{ delete: 1 }, { retain: 3 }, { insert: 'e' }] },
      version: 4,
    });
    assert.notEqual(next[1].message_id, edits[0].message_id);
  });

  test('flush resolves after the last ack', async () => {
    const { client, socket } = await createSyncedClient('', 0);
    client.insert(0, 'a');
    client.insert(1, 'b');
    let flushed = false;
    const flushing = client.flush().then(() => {
      flushed = true;
    });
    socket.receive(ack(socket.edits()[0].message_id, 0));
    await Promise.resolve();
    assert.equal(flushed, false);
    socket.receive(ack(socket.edits()[1].message_id, 1));
    await flushing;
    assert.equal(flushed, true);
    assert.equal(client.hasPendingEdits, false);
  });

  test('positions count code points', async () => {
    const { client, socket } = await createSyncedClient('😀😀', 0);
    client.insert(1, 'x');
    assert.equal(client.text, '😀x😀');
    assert.deepEqual(socket.edits()[0].data.operation.ops, [{ retain: 1 }, { insert: 'x' }]);
    assert.throws(() => client.insert(4, 'y'), RangeError);
  });

  test('change event carries local ops', async () => {
    const { client } = await createSyncedClient('abc', 0);
    const changes = recordEvents(client, 'change');
    client.delete(1, 1);
    assert.deepEqual(changes, [{ ops: [{ retain: 1 }, { delete: 1 }], text: 'ac', origin: 'local' }]);
  });

  test('large insert is split at the limit', async () => {
    const { client, socket } = await createSyncedClient('ab', 0, { maxInsertLength: 3 });
    client.insert(1, '12345😀7');
    assert.equal(client.text, 'a12345😀7b');
    assert.deepEqual(socket.edits()[0].data.operation.ops, [{ retain: 1 }, { insert: '123' }]);
    socket.receive(ack(socket.edits()[0].message_id, 0));
    assert.deepEqual(socket.edits()[1].data.operation.ops, [{ retain: 4 }, { insert: '45😀' }]);
    socket.receive(ack(socket.edits()[1].message_id, 1));
    assert.deepEqual(socket.edits()[2].data.operation.ops, [{ retain: 7 }, { insert: '7' }]);
    socket.receive(ack(socket.edits()[2].message_id, 2));
    assert.equal(client.hasPendingEdits, false);
  });
});

describe('remote operations', () => {
  test('remote op is transformed against pending edits', async () => {
    const { client, socket } = await createSyncedClient('abc', 5);
    client.insert(1, 'X'); // in flight
    client.insert(4, 'Y'); // buffered: aXbcY
    const operations = recordEvents(client, 'operation');
    socket.receive(remoteEdit([{ retain: 2 }, { insert: 'R' }], 5));
    assert.equal(client.text, 'aXbRcY');
    assert.equal(client.version, 6);
    assert.equal(operations.length, 1);
    assert.deepEqual(operations[0].ops, [{ retain: 2 }, { insert: 'R' }]);
    assert.deepEqual(operations[0].appliedOps, [{ retain: 3 }, { insert: 'R' }]);
    assert.equal(operations[0].version, 5);
    assert.equal(operations[0].clientId, 'other');
    assert.deepEqual(operations[0].user, { id: 2, username: 'ada' });

    // The in-flight edit is acknowledged at the version after the remote one, and
    // the buffer is sent transformed over the remote op.
    socket.receive(ack(socket.edits()[0].message_id, 6));
    const buffered = socket.edits()[1];
    assert.equal(buffered.data.version, 7);
    assert.deepEqual(buffered.data.operation.ops, [{ retain: 5 }, { insert: 'Y' }]);
  });

  test('concurrent inserts converge on HelloWorld', async () => {
    const first = await createSyncedClient('', 0, { clientId: 'first' });
    const second = await createSyncedClient('', 0, { clientId: 'second' });
    first.client.insert(0, 'Hello');
    second.client.insert(0, 'World');
    const hello = first.socket.edits()[0];
    const world = second.socket.edits()[0];

    // The server commits Hello at version 0 and World, transformed, at version 1.
    const worldOnServer = transform(world.data.operation.ops, hello.data.operation.ops, 'right');
    first.socket.receive(ack(hello.message_id, 0));
    second.socket.receive(remoteEdit(hello.data.operation.ops, 0, { clientId: 'first' }));
    second.socket.receive(ack(world.message_id, 1));
    first.socket.receive(remoteEdit(worldOnServer, 1, { clientId: 'second' }));

    assert.equal(first.client.text, 'HelloWorld');
    assert.equal(second.client.text, 'HelloWorld');
    assert.equal(first.client.version, 2);
    assert.equal(second.client.version, 2);
  });

  test('older version is ignored as a duplicate', async () => {
    const { client, socket } = await createSyncedClient('abc', 4);
    socket.receive(remoteEdit([{ insert: 'old' }], 3));
    assert.equal(client.text, 'abc');
    assert.equal(client.version, 4);
  });

  test('gap sends sync and waits for catch_up', async () => {
    const { client, socket } = await createSyncedClient('abc', 4);
    socket.receive(remoteEdit([{ retain: 3 }, { insert: '6' }], 6));
    assert.equal(client.text, 'abc');
    assert.deepEqual(socket.sent.at(-1), { type: 'system', event: 'sync', data: { version: 4 } });

    // Local edits wait in the buffer during the sync.
    client.insert(0, 'L');
    assert.equal(socket.edits().length, 0);

    socket.receive(remoteEdit([{ retain: 6 }, { insert: '7' }], 7));
    socket.receive(
      catchUp(7, [
        catchUpEntry([{ retain: 3 }, { insert: '4' }], 4, 'other', 'x4'),
        catchUpEntry([{ retain: 4 }, { insert: '5' }], 5, 'other', 'x5'),
        catchUpEntry([{ retain: 5 }, { insert: '6' }], 6, 'other', 'x6'),
      ]),
    );
    // Versions 4 to 6 come from catch_up, and the queued 7 applies after them.
    assert.equal(client.text, 'Labc4567');
    assert.equal(client.version, 8);
    assert.equal(socket.edits().length, 1);
    assert.equal(socket.edits()[0].data.version, 8);
  });

  test('remote op that does not fit resyncs', async () => {
    const { client, sockets } = await createSyncedClient('abc', 0, { reconnect: { baseDelay: 1, maxDelay: 2 } });
    sockets[0].receive(remoteEdit([{ retain: 10 }, { insert: 'x' }], 0));
    await waitFor(() => sockets.length === 2, 'a new socket');
    assert.equal(sockets[1].params().has('since'), false);
    assert.equal(client.connectionState, 'reconnecting');
  });
});

describe('recovery', () => {
  const fast = { reconnect: { baseDelay: 1, maxDelay: 2, maxAttempts: 5 } };

  test('reconnect uses since and resends the in-flight edit', async () => {
    const { client, sockets } = await createSyncedClient('abc', 2, fast);
    const states = recordEvents(client, 'connection_state');
    client.insert(0, 'X');
    const firstSend = sockets[0].edits()[0];
    sockets[0].serverClose(1006);
    assert.deepEqual(
      states.map((event) => event.state),
      ['disconnected', 'reconnecting'],
    );
    await waitFor(() => sockets.length === 2, 'a new socket');
    assert.equal(sockets[1].params().get('since'), '2');

    sockets[1].open();
    sockets[1].receive(catchUp(3, [catchUpEntry([{ retain: 3 }, { insert: '!' }], 2, 'other', 'r2')]));
    assert.equal(client.text, 'Xabc!');
    const resent = sockets[1].edits()[0];
    assert.equal(resent.message_id, firstSend.message_id);
    assert.equal(resent.data.version, 3);
    assert.deepEqual(resent.data.operation.ops, [{ insert: 'X' }]);
    assert.equal(client.connectionState, 'connected');
  });

  test('catch_up with own op counts as its ack', async () => {
    const { client, sockets } = await createSyncedClient('abc', 2, fast);
    client.insert(0, 'X');
    const inflight = sockets[0].edits()[0];
    client.insert(4, 'Y'); // buffered
    const acks = recordEvents(client, 'ack');
    sockets[0].serverClose(1006);
    await waitFor(() => sockets.length === 2, 'a new socket');
    sockets[1].open();
    sockets[1].receive(
      catchUp(4, [
        catchUpEntry([{ insert: 'X' }], 2, 'client-a', inflight.message_id),
        catchUpEntry([{ retain: 1 }, { delete: 1 }], 3, 'other', 'r3'),
      ]),
    );
    assert.deepEqual(acks, [{ messageId: inflight.message_id, version: 2 }]);
    assert.equal(client.text, 'XbcY');
    assert.equal(client.version, 4);
    const edits = sockets[1].edits();
    assert.equal(edits.length, 1);
    assert.notEqual(edits[0].message_id, inflight.message_id);
    assert.deepEqual(edits[0].data, { operation: { ops: [{ retain: 3 }, { insert: 'Y' }] }, version: 4 });
  });

  test('own op broadcast to a new socket counts as its ack', async () => {
    const { client, sockets } = await createSyncedClient('abc', 2, fast);
    client.insert(0, 'X');
    const inflight = sockets[0].edits()[0];
    sockets[0].serverClose(1006);
    await waitFor(() => sockets.length === 2, 'a new socket');
    sockets[1].open();
    sockets[1].receive(catchUp(2, []));
    // The old socket's copy is stored after the new socket joined.
    sockets[1].receive(remoteEdit([{ insert: 'X' }], 2, { clientId: 'client-a', messageId: inflight.message_id }));
    assert.equal(client.text, 'Xabc');
    assert.equal(client.version, 3);
    assert.equal(client.hasPendingEdits, false);
  });

  test('snapshot rebases pending edits', async () => {
    const { client, sockets } = await createSyncedClient('hello world', 10, fast);
    client.insert(5, ','); // in flight: "hello, world"
    const inflight = sockets[0].edits()[0];
    client.insert(12, '!'); // buffered: "hello, world!"
    sockets[0].serverClose(1006);
    await waitFor(() => sockets.length === 2, 'a new socket');
    sockets[1].open();
    // Too far behind for catch_up: the server changed "world" to "there".
    sockets[1].receive(documentState('hello there', 40, { acknowledged: [] }));
    assert.equal(client.text, 'hello, there!');
    assert.equal(client.version, 40);

    const resent = sockets[1].edits()[0];
    assert.equal(resent.message_id, inflight.message_id);
    assert.equal(resent.data.version, 40);
    assert.deepEqual(resent.data.operation.ops, [{ retain: 5 }, { insert: ',' }]);

    sockets[1].receive(ack(inflight.message_id, 40));
    const buffered = sockets[1].edits()[1];
    assert.deepEqual(buffered.data, { operation: { ops: [{ retain: 12 }, { insert: '!' }] }, version: 41 });
  });

  test('snapshot drops an acknowledged in-flight edit', async () => {
    const { client, sockets } = await createSyncedClient('abc', 3, fast);
    client.insert(3, 'd'); // in flight
    const inflight = sockets[0].edits()[0];
    client.insert(0, '>'); // buffered
    const acks = recordEvents(client, 'ack');
    sockets[0].serverClose(1006);
    await waitFor(() => sockets.length === 2, 'a new socket');
    sockets[1].open();
    sockets[1].receive(
      documentState('Zabcd', 5, { acknowledged: [{ message_id: inflight.message_id, version: 3 }] }),
    );
    assert.deepEqual(acks, [{ messageId: inflight.message_id, version: 3 }]);
    // The snapshot's insert at 0 counts as committed first, so it stays on the left.
    assert.equal(client.text, 'Z>abcd');
    const edits = sockets[1].edits();
    assert.equal(edits.length, 1);
    assert.notEqual(edits[0].message_id, inflight.message_id);
    assert.deepEqual(edits[0].data, { operation: { ops: [{ retain: 1 }, { insert: '>' }] }, version: 5 });
  });

  test('duplicate ack at another version resyncs', async () => {
    const { client, sockets } = await createSyncedClient('abc', 3, fast);
    client.insert(0, 'x');
    const edit = sockets[0].edits()[0];
    sockets[0].receive(ack(edit.message_id, 1, { duplicate: true }));
    assert.equal(client.hasPendingEdits, false);
    await waitFor(() => sockets.length === 2, 'a new socket');
    assert.equal(sockets[1].params().has('since'), false);
  });

  test('unavailable error resends the same edit', async () => {
    const { client, socket } = await createSyncedClient('abc', 0, fast);
    const errors = recordEvents(client, 'error');
    client.insert(0, 'x');
    const edit = socket.edits()[0];
    socket.receive({
      type: 'system',
      event: 'error',
      data: { code: 'unavailable', message: 'the edit could not be stored', message_id: edit.message_id },
    });
    assert.deepEqual(errors, [{ code: 'unavailable', message: 'the edit could not be stored', messageId: edit.message_id }]);
    await waitFor(() => socket.edits().length === 2, 'a resent edit');
    assert.equal(socket.edits()[1].message_id, edit.message_id);
    assert.deepEqual(socket.edits()[1].data, edit.data);
  });

  test('forbidden error discards pending edits', async () => {
    const { client, socket } = await createSyncedClient('abc', 0, fast);
    const errors = recordEvents(client, 'error');
    client.insert(0, 'x');
    client.insert(0, 'y');
    const flushing = client.flush();
    const edit = socket.edits()[0];
    socket.receive({
      type: 'system',
      event: 'error',
      data: { code: 'forbidden', message: "role 'viewer' cannot edit", message_id: edit.message_id },
    });
    await assert.rejects(flushing, /rejected: forbidden/);
    assert.equal(errors[0].code, 'forbidden');
    assert.equal(client.text, 'abc');
    assert.equal(client.hasPendingEdits, false);
  });

  test('backoff stays within jitter bounds then fails', async () => {
    const reconnect = { baseDelay: 4, maxDelay: 10, maxAttempts: 4 };
    const { client, sockets } = createClient({ reconnect });
    const states = recordEvents(client, 'connection_state');
    const connected = client.connect();
    let closed = 0;
    while (client.connectionState !== 'failed') {
      await waitFor(
        () => sockets.length > closed || client.connectionState === 'failed',
        'the next attempt',
      );
      if (sockets.length > closed) {
        sockets[closed].serverClose(1006);
        closed += 1;
      }
    }
    await assert.rejects(connected, /gave up after 4 reconnect attempts/);
    assert.equal(sockets.length, 5);

    const delays = states.filter((event) => event.state === 'reconnecting');
    assert.equal(delays.length, 4);
    delays.forEach((event, index) => {
      const ceiling = Math.min(reconnect.maxDelay, reconnect.baseDelay * 2 ** index);
      assert.equal(event.attempt, index + 1);
      assert.ok(event.delay >= 0, `attempt ${index + 1}: delay ${event.delay} is negative`);
      assert.ok(event.delay <= ceiling, `attempt ${index + 1}: delay ${event.delay} > ${ceiling}`);
    });
    assert.equal(states.at(-1).state, 'failed');
  });

  test('sync resets the attempt counter', async () => {
    const { client, sockets } = await createSyncedClient('', 0, fast);
    for (let round = 0; round < 8; round += 1) {
      sockets.at(-1).serverClose(1006);
      const count = sockets.length;
      await waitFor(() => sockets.length > count, 'a new socket');
      sockets.at(-1).open();
      sockets.at(-1).receive(catchUp(0, []));
    }
    assert.equal(client.connectionState, 'connected');
  });

  for (const code of [4000, 4003, 4004, 4010]) {
    test(`close ${code} fails without retry`, async () => {
      const { client, sockets } = createClient(fast);
      const connected = client.connect();
      sockets[0].open();
      sockets[0].serverClose(code, 'no access');
      await assert.rejects(connected, new RegExp(`code ${code}`));
      assert.equal(client.connectionState, 'failed');
      await new Promise((resolve) => setTimeout(resolve, 10));
      assert.equal(sockets.length, 1);
    });
  }

  test('close 4001 without tokenProvider fails', async () => {
    const { client, sockets } = createClient(fast);
    const connected = client.connect();
    sockets[0].open();
    sockets[0].serverClose(4001);
    await assert.rejects(connected, /tokenProvider/);
    assert.equal(client.connectionState, 'failed');
  });

  test('close 4001 fetches a token and reconnects', async () => {
    let calls = 0;
    const tokenProvider = async () => {
      calls += 1;
      return `fresh-token-${calls}`;
    };
    const { client, sockets } = await createSyncedClient('abc', 2, { ...fast, tokenProvider });
    sockets[0].serverClose(4001, 'token expired');
    await waitFor(() => sockets.length === 2, 'a new socket');
    assert.equal(calls, 1);
    assert.equal(sockets[1].params().get('token'), 'fresh-token-1');
    assert.equal(sockets[1].params().get('since'), '2');
    sockets[1].open();
    sockets[1].receive(catchUp(2, []));
    assert.equal(client.connectionState, 'connected');
  });

  test('tokenProvider supplies the first token', async () => {
    const { client, sockets } = createClient({ accessToken: null, tokenProvider: async () => 'provided' });
    client.connect().catch(() => {});
    await waitFor(() => sockets.length === 1, 'the first socket');
    assert.equal(sockets[0].params().get('token'), 'provided');
  });

  test('token is refreshed before exp', async () => {
    const payload = (seconds) =>
      Buffer.from(JSON.stringify({ exp: Math.floor(Date.now() / 1000) + seconds })).toString('base64url');
    let calls = 0;
    const tokenProvider = async () => {
      calls += 1;
      return `h.${payload(3600)}.s`;
    };
    // One second of lifetime left: the refresh comes after 90% of it.
    const { client, sockets } = await createSyncedClient('', 0, {
      ...fast,
      accessToken: `h.${payload(1)}.s`,
      tokenProvider,
    });
    await waitFor(() => sockets.length === 2, 'a refreshed socket', 3000);
    assert.equal(calls, 1);
    assert.equal(sockets[0].closedWith.code, 1000);
    sockets[1].open();
    sockets[1].receive(catchUp(0, []));
    assert.equal(client.connectionState, 'connected');
  });

  test('1009 discards the in-flight edit', async () => {
    const { client, sockets } = await createSyncedClient('abc', 0, fast);
    const errors = recordEvents(client, 'error');
    client.insert(0, 'huge');
    sockets[0].serverClose(1009);
    assert.equal(client.text, 'abc');
    assert.equal(errors[0].code, 'message_too_big');
    await waitFor(() => sockets.length === 2, 'a new socket');
  });
});

describe('heartbeat', () => {
  test('pong emits latency', async () => {
    const { client, socket } = await createSyncedClient('', 0, { heartbeatInterval: 5, heartbeatTimeout: 1000 });
    const beats = recordEvents(client, 'heartbeat');
    await waitFor(() => socket.sent.some((message) => message.event === 'ping'), 'a ping');
    const ping = socket.sent.find((message) => message.event === 'ping');
    assert.equal(typeof ping.data.timestamp, 'number');
    socket.receive({ type: 'system', event: 'pong', data: { timestamp: ping.data.timestamp } });
    assert.equal(beats.length, 1);
    assert.ok(beats[0] >= 0, `latency ${beats[0]} is negative`);
    assert.ok(beats[0] < 1000, `latency ${beats[0]} is too large`);
  });

  test('missing pong reconnects', async () => {
    const { client, sockets } = await createSyncedClient('abc', 3, {
      heartbeatInterval: 5,
      heartbeatTimeout: 10,
      reconnect: { baseDelay: 1, maxDelay: 2 },
    });
    const states = recordEvents(client, 'connection_state');
    await waitFor(() => sockets.length === 2, 'a new socket');
    assert.match(states[0].reason, /no pong within 10 ms/);
    assert.equal(sockets[0].closedWith.code, 1000);
    assert.equal(sockets[1].params().get('since'), '3');
  });

  test('stuck close handshake reconnects', async () => {
    const { sockets } = await createSyncedClient('abc', 3, {
      heartbeatInterval: 5,
      heartbeatTimeout: 10,
      reconnect: { baseDelay: 1, maxDelay: 2 },
    });
    // The socket starts closing, but its close event never comes.
    sockets[0].readyState = 2;
    await waitFor(() => sockets.length === 2, 'a new socket');
    assert.equal(sockets[1].params().get('since'), '3');
  });
});

describe('debug and close', () => {
  test('debug logs redact the token', async () => {
    const lines = [];
    const original = console.debug;
    console.debug = (...parts) => lines.push(parts.join(' '));
    try {
      const { client } = await createSyncedClient('abc', 0, { debug: true });
      client.insert(0, 'x');
      await client.close();
    } finally {
      console.debug = original;
    }
    const text = lines.join('\n');
    assert.ok(text.includes('token=%5Bredacted%5D') || text.includes('token=[redacted]'), text);
    assert.ok(!text.includes(TOKEN), 'a log line contains the token');
    assert.ok(text.includes('document_edit'), 'sent frames are logged');
    assert.ok(text.includes('document_state'), 'received frames are logged');
    assert.ok(text.includes('connecting -> connected'), 'state changes are logged');
    assert.ok(text.includes('closing -> disconnected'), 'close is logged');
  });

  test('close rejects pending flush and connect', async () => {
    const { client, socket } = await createSyncedClient('abc', 0);
    client.insert(0, 'x');
    const flushing = client.flush();
    await client.close();
    await assert.rejects(flushing, /closed before every edit was acknowledged/);
    assert.equal(socket.closedWith.code, 1000);
    assert.equal(client.connectionState, 'disconnected');

    const { client: other } = createClient();
    const connecting = other.connect();
    await other.close();
    await assert.rejects(connecting, /closed before the document was synced/);
  });

  test('close during reconnect stops retries', async () => {
    const { client, sockets } = await createSyncedClient('abc', 0, { reconnect: { baseDelay: 20, maxDelay: 20 } });
    sockets[0].serverClose(1006);
    await client.close();
    await new Promise((resolve) => setTimeout(resolve, 40));
    assert.equal(sockets.length, 1);
    assert.equal(client.connectionState, 'disconnected');
  });

  test('connect after close resumes with since', async () => {
    const { client, sockets } = await createSyncedClient('abc', 6);
    client.insert(0, 'x');
    const edit = sockets[0].edits()[0];
    await client.close();
    const connected = client.connect();
    sockets[1].open();
    assert.equal(sockets[1].params().get('since'), '6');
    sockets[1].receive(catchUp(6, []));
    await connected;
    assert.equal(sockets[1].edits()[0].message_id, edit.message_id);
  });
});

// A fake server that commits, transforms and broadcasts like docs/protocol.md, with
// per-socket message queues that a seeded scheduler delivers in random order.
class FakeServer {
  constructor(random, { maxCatchUp }) {
    this.random = random;
    this.maxCatchUp = maxCatchUp;
    this.text = '';
    this.operations = [];
    this.connections = [];
    const server = this;
    this.WebSocket = class extends createSocketClass().FakeWebSocket {
      constructor(url) {
        super(url);
        server.accept(this);
      }

      send(frame) {
        super.send(frame);
        this.connection.toServer.push(this.sent.pop());
      }

      close(code, reason) {
        super.close(code, reason);
        server.drop(this.connection);
      }
    };
  }

  accept(socket) {
    const params = new URL(socket.url).searchParams;
    const connection = {
      socket,
      clientId: params.get('client_id'),
      since: params.has('since') ? Number(params.get('since')) : null,
      opened: false,
      dead: false,
      nextVersion: 0,
      toClient: [],
      toServer: [],
    };
    socket.connection = connection;
    this.connections.push(connection);
  }

  openConnection(connection) {
    connection.opened = true;
    connection.socket.open();
    this.sendJoinState(connection, connection.since);
  }

  sendJoinState(connection, since) {
    const version = this.operations.length;
    if (since !== null && since <= version && version - since <= this.maxCatchUp) {
      const operations = this.operations.slice(since).map((stored) => ({
        ...remoteEdit(stored.ops, stored.version).data,
        client_id: stored.clientId,
        message_id: stored.messageId,
      }));
      connection.toClient.push(catchUp(version, operations));
    } else {
      const acknowledged = this.operations
        .filter((stored) => since !== null && stored.version >= since && stored.clientId === connection.clientId)
        .map((stored) => ({ message_id: stored.messageId, version: stored.version }));
      connection.toClient.push(documentState(this.text, version, { acknowledged }));
    }
    connection.nextVersion = Math.max(connection.nextVersion, version);
  }

  deliverMissing(connection, until) {
    while (connection.nextVersion < until) {
      const stored = this.operations[connection.nextVersion];
      connection.toClient.push(
        remoteEdit(stored.ops, stored.version, { clientId: stored.clientId, messageId: stored.messageId }),
      );
      connection.nextVersion += 1;
    }
  }

  handle(connection, message) {
    if (message.event === 'sync') {
      this.sendJoinState(connection, message.data.version);
      return;
    }
    if (message.event !== 'document_edit') {
      return;
    }

    const existing = this.operations.find(
      (stored) => stored.clientId === connection.clientId && stored.messageId === message.message_id,
    );
    if (existing) {
      this.deliverMissing(connection, existing.version);
      connection.toClient.push(ack(message.message_id, existing.version, { duplicate: true }));
      connection.nextVersion = Math.max(connection.nextVersion, existing.version + 1);
      return;
    }

    if (this.random() < 0.03) {
      connection.toClient.push({
        type: 'system',
        event: 'error',
        data: { code: 'unavailable', message: 'the database is busy', message_id: message.message_id },
      });
      return;
    }

    let ops = message.data.operation.ops;
    for (const stored of this.operations.slice(message.data.version)) {
      ops = transform(ops, stored.ops, 'right');
    }
    this.text = apply(this.text, ops);
    const version = this.operations.length;
    this.operations.push({ ops, version, clientId: connection.clientId, messageId: message.message_id });
    this.deliverMissing(connection, version);
    connection.toClient.push(ack(message.message_id, version));
    connection.nextVersion = version + 1;

    for (const other of this.connections) {
      if (other !== connection && !other.dead && other.opened) {
        this.deliverMissing(other, version + 1);
      }
    }
  }

  drop(connection) {
    connection.dead = true;
    connection.toClient = [];
  }

  /** Performs one random step; returns false when nothing was left to do. */
  step() {
    const actions = [];
    for (const connection of this.connections) {
      if (!connection.opened && !connection.dead) {
        actions.push(() => this.openConnection(connection));
      }
      if (connection.toServer.length > 0) {
        actions.push(() => this.handle(connection, connection.toServer.shift()));
      }
      if (connection.toClient.length > 0 && !connection.dead) {
        actions.push(() => connection.socket.receive(connection.toClient.shift()));
      }
    }
    if (actions.length === 0) {
      return false;
    }
    actions[Math.floor(this.random() * actions.length)]();
    return true;
  }

  /** Closes a random live connection as a network failure would. */
  breakRandomConnection() {
    const live = this.connections.filter((connection) => connection.opened && !connection.dead);
    if (live.length === 0) {
      return;
    }
    const connection = live[Math.floor(this.random() * live.length)];
    // Frames already sent may still reach the server after the drop.
    this.drop(connection);
    connection.socket.serverClose(1006);
  }
}

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

const PIECES = ['a', 'b', '😀', 'e\u0301', '\r\n', ' '];

function randomLocalEdit(random, client) {
  const length = codePointLength(client.text);
  const position = Math.floor(random() * (length + 1));
  if (length > 0 && random() < 0.35) {
    const count = 1 + Math.floor(random() * Math.min(3, length - position));
    if (position < length) {
      client.delete(position, count);
      return;
    }
  }
  client.insert(position, PIECES[Math.floor(random() * PIECES.length)]);
}

describe('fake server simulation', () => {
  for (const seed of [1, 2, 3, 4, 5, 6]) {
    test(`three clients converge, seed ${seed}`, async () => {
      const random = createRandom(seed);
      const server = new FakeServer(random, { maxCatchUp: 4 });
      const simulated = [];
      const errorCodes = new Set();
      for (let index = 0; index < 3; index += 1) {
        const client = new MateriRealtime({
          accessToken: TOKEN,
          documentId: DOCUMENT_ID,
          url: 'ws://127.0.0.1:8000',
          clientId: `sim-${index}`,
          heartbeatInterval: 0,
          connectTimeout: 0,
          reconnect: { baseDelay: 0, maxDelay: 0, maxAttempts: 1000 },
          WebSocket: server.WebSocket,
        });
        clients.push(client);
        simulated.push(client);
        client.on('error', (error) => errorCodes.add(error.code));
        client.connect().catch(() => {});
      }

      for (let step = 0; step < 1500; step += 1) {
        const roll = random();
        if (roll < 0.25) {
          const client = simulated[Math.floor(random() * simulated.length)];
          if (client.version > 0 || client.connectionState === 'connected' || client.text !== '') {
            try {
              randomLocalEdit(random, client);
            } catch (error) {
              assert.match(error.message, /before the document is synced/);
            }
          }
        } else if (roll < 0.26) {
          server.breakRandomConnection();
        } else {
          server.step();
        }
        if (step % 50 === 0) {
          // Lets reconnect timers run.
          await new Promise((resolve) => setTimeout(resolve, 1));
        }
      }

      // With no new edits or failures, deliver every queued frame until all settle.
      const settled = () =>
        simulated.every((client) => client.connectionState === 'connected' && !client.hasPendingEdits) &&
        server.connections.every(
          (connection) => connection.toServer.length === 0 && (connection.dead || connection.toClient.length === 0),
        );
      const started = Date.now();
      while (!settled()) {
        if (!server.step()) {
          await new Promise((resolve) => setTimeout(resolve, 1));
        }
        if (Date.now() - started > 5000) {
          const states = simulated.map(
            (client) =>
              `${client.clientId}: ${client.connectionState} at version ${client.version}, ` +
              `pending ${client.hasPendingEdits}`,
          );
          assert.fail(
            `the simulation did not settle within 5 s at server version ` +
              `${server.operations.length} (${states.join('; ')})`,
          );
        }
      }

      for (const client of simulated) {
        assert.equal(client.text, server.text, `${client.clientId} text`);
        assert.equal(client.version, server.operations.length, `${client.clientId} version`);
      }
      assert.ok(server.operations.length > 50, `only ${server.operations.length} operations were committed`);
      assert.deepEqual([...errorCodes], errorCodes.size > 0 ? ['unavailable'] : []);
    });
  }

  test('buffer is the composed local edits', async () => {
    // Guards the invariant the simulation relies on: the buffer is the composition
    // of the local edits made while an edit is in flight.
    const { client, socket } = await createSyncedClient('0123456789', 0);
    client.insert(2, 'a');
    const applied = [];
    applied.push(client.delete(0, 1));
    applied.push(client.insert(5, '😀'));
    socket.receive(ack(socket.edits()[0].message_id, 0));
    const buffered = socket.edits()[1].data.operation.ops;
    assert.deepEqual(buffered, compose(applied[0], applied[1]));
  });
});
