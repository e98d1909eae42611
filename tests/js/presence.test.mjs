// Tests of the MateriRealtime presence API with an injected fake WebSocket. As in
// client.test.mjs, the tests play the server's part: they read the frames the client
// sends and deliver presence events to it.
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';

import { MateriRealtime } from '../../static/materi/realtime.js';

const TOKEN = 'header.eyJzdWIiOiIxIn0.signature';
const DOCUMENT_ID = '0b6c5a1e-2f4b-4c1e-9a55-8d3e1f0a7b21';
const OWN_CLIENT_ID = 'client-a';

const ADA = { user_id: 3, display_name: 'Ada Lovelace', color: '#1d4ed8' };
const BOB = { user_id: 4, display_name: 'bob', color: '#a16207' };

/** Returns a fake WebSocket class whose instances are recorded in `sockets`. */
function createSocketClass() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
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

    /** Returns the data of every presence message of `event` the client sent. */
    presenceSent(event) {
      return this.sent
        .filter((message) => message.type === 'presence' && message.event === event)
        .map((message) => message.data);
    }
  }
  return { FakeWebSocket, sockets };
}

function documentState(content, version, presence = []) {
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
      presence,
    },
  };
}

function catchUp(version, presence) {
  return {
    type: 'system',
    event: 'catch_up',
    data: { document_id: DOCUMENT_ID, title: 'Notes', role: 'editor', version, operations: [], presence },
  };
}

function remoteEdit(ops, version, clientId = 'other') {
  return {
    type: 'operation',
    event: 'document_edit',
    data: {
      operation: { ops },
      version,
      timestamp: '2026-12-04T10:30:00+00:00',
      user: { id: 4, username: 'bob' },
    },
    client_id: clientId,
    message_id: `m-${version}`,
  };
}

function ack(messageId, version) {
  return { type: 'system', event: 'operation_ack', data: { message_id: messageId, version } };
}

/** Returns a `presence` list entry of `user` with `clients`. */
function listEntry(user, clients) {
  return { ...user, clients };
}

function listClient(clientId, selections = [], activity = 'active') {
  return { client_id: clientId, selections, activity };
}

function join(user, clientId, version, selections = [], activity = 'active') {
  return {
    type: 'presence',
    event: 'join',
    data: { client_id: clientId, ...user, selections, activity, version },
    client_id: clientId,
  };
}

function leave(user, clientId) {
  return {
    type: 'presence',
    event: 'leave',
    data: { client_id: clientId, user_id: user.user_id },
    client_id: clientId,
  };
}

function cursorUpdate(user, clientId, selections, version) {
  return {
    type: 'presence',
    event: 'cursor_update',
    data: { client_id: clientId, user_id: user.user_id, selections, version },
    client_id: clientId,
  };
}

function activity(user, clientId, state) {
  return {
    type: 'presence',
    event: 'activity',
    data: { client_id: clientId, user_id: user.user_id, state },
    client_id: clientId,
  };
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

function sleep(milliseconds) {
  return new Promise((resolve) => setTimeout(resolve, milliseconds));
}

const clients = [];

afterEach(async () => {
  for (const client of clients.splice(0)) {
    await client.close();
  }
});

/** Creates a client and syncs it to `content` at `version` with a presence list. */
async function createSyncedClient(content = '', version = 0, presence = [], options = {}) {
  const { FakeWebSocket, sockets } = createSocketClass();
  const client = new MateriRealtime({
    accessToken: TOKEN,
    documentId: DOCUMENT_ID,
    url: 'ws://127.0.0.1:8000',
    clientId: OWN_CLIENT_ID,
    heartbeatInterval: 0,
    connectTimeout: 0,
    WebSocket: FakeWebSocket,
    ...options,
  });
  clients.push(client);
  const connected = client.connect();
  sockets[0].open();
  sockets[0].receive(documentState(content, version, presence));
  await connected;
  return { client, sockets, socket: sockets[0] };
}

function recordEvents(client, event) {
  const events = [];
  client.on(event, (payload) => events.push(payload));
  return events;
}

/** Returns the selections of client `clientId` in the client's presence list. */
function selectionsOf(client, clientId) {
  for (const person of client.presence) {
    const found = person.clients.find((entry) => entry.clientId === clientId);
    if (found !== undefined) {
      return found.selections;
    }
  }
  throw new Error(`client ${clientId} is not in the presence list`);
}

describe('presence list', () => {
  test('document_state list excludes own client', async () => {
    const { client } = await createSyncedClient('Hello world', 7, [
      listEntry(ADA, [
        listClient(OWN_CLIENT_ID, [{ anchor: 0, head: 1 }]),
        listClient('c7', [{ anchor: 5, head: 9 }], 'idle'),
      ]),
      listEntry(BOB, [listClient('c2', [], 'away')]),
    ]);
    assert.deepEqual(client.presence, [
      {
        userId: 3,
        displayName: 'Ada Lovelace',
        color: '#1d4ed8',
        clients: [{ clientId: 'c7', selections: [{ anchor: 5, head: 9 }], activity: 'idle' }],
      },
      {
        userId: 4,
        displayName: 'bob',
        color: '#a16207',
        clients: [{ clientId: 'c2', selections: [], activity: 'away' }],
      },
    ]);
  });

  test('list is a copy', async () => {
    const { client } = await createSyncedClient('Hello', 0, [
      listEntry(BOB, [listClient('c2', [{ anchor: 1, head: 2 }])]),
    ]);
    client.presence[0].clients[0].selections[0].head = 4;
    assert.deepEqual(selectionsOf(client, 'c2'), [{ anchor: 1, head: 2 }]);
  });

  test('selections past the end are clamped', async () => {
    const { client } = await createSyncedClient('Hello', 0, [
      listEntry(BOB, [listClient('c2', [{ anchor: 3, head: 40 }])]),
    ]);
    assert.deepEqual(selectionsOf(client, 'c2'), [{ anchor: 3, head: 5 }]);
  });

  test('join and leave update the list', async () => {
    const { client, socket } = await createSyncedClient('Hello', 2);
    const events = recordEvents(client, 'presence');

    socket.receive(join(BOB, 'c2', 2, [{ anchor: 1, head: 1 }]));
    assert.equal(events.length, 1);
    assert.equal(events[0].event, 'join');
    assert.equal(events[0].clientId, 'c2');
    assert.deepEqual(events[0].presence, client.presence);
    assert.deepEqual(client.presence, [
      {
        userId: 4,
        displayName: 'bob',
        color: '#a16207',
        clients: [{ clientId: 'c2', selections: [{ anchor: 1, head: 1 }], activity: 'active' }],
      },
    ]);

    socket.receive(leave(BOB, 'c2'));
    assert.equal(events.length, 2);
    assert.equal(events[1].event, 'leave');
    assert.deepEqual(events[1].presence, []);
    assert.deepEqual(client.presence, []);
  });

  test('join of a listed client replaces it', async () => {
    const { client, socket } = await createSyncedClient('Hello', 2, [
      listEntry(BOB, [listClient('c2', [{ anchor: 1, head: 1 }], 'idle')]),
    ]);
    socket.receive(join(BOB, 'c2', 2, [{ anchor: 4, head: 4 }]));
    assert.equal(client.presence.length, 1);
    assert.deepEqual(client.presence[0].clients, [
      { clientId: 'c2', selections: [{ anchor: 4, head: 4 }], activity: 'active' },
    ]);
  });

  test('leave of an unknown client is ignored', async () => {
    const { client, socket } = await createSyncedClient('Hello', 2, [
      listEntry(BOB, [listClient('c2')]),
    ]);
    const events = recordEvents(client, 'presence');
    socket.receive(leave(BOB, 'c9'));
    assert.equal(events.length, 0);
    assert.equal(client.presence.length, 1);
  });

  test('own presence events are ignored', async () => {
    const { client, socket } = await createSyncedClient('Hello', 2);
    socket.receive(join(ADA, OWN_CLIENT_ID, 2));
    assert.deepEqual(client.presence, []);
  });

  test('two clients of one user are grouped', async () => {
    const { client, socket } = await createSyncedClient('Hello', 2);
    socket.receive(join(BOB, 'c2', 2, [{ anchor: 1, head: 1 }]));
    socket.receive(join(ADA, 'c3', 2));
    socket.receive(join(BOB, 'c4', 2, [{ anchor: 3, head: 5 }]));

    const people = client.presence;
    assert.deepEqual(
      people.map((person) => person.userId),
      [4, 3],
    );
    assert.deepEqual(
      people[0].clients.map((entry) => entry.clientId),
      ['c2', 'c4'],
    );

    socket.receive(leave(BOB, 'c2'));
    assert.deepEqual(
      client.presence[0].clients.map((entry) => entry.clientId),
      ['c4'],
    );
    socket.receive(leave(BOB, 'c4'));
    assert.deepEqual(
      client.presence.map((person) => person.userId),
      [3],
    );
  });

  test('activity event sets the state', async () => {
    const { client, socket } = await createSyncedClient('Hello', 2, [
      listEntry(BOB, [listClient('c2')]),
    ]);
    const events = recordEvents(client, 'presence');
    socket.receive(activity(BOB, 'c2', 'idle'));
    assert.equal(client.presence[0].clients[0].activity, 'idle');
    assert.equal(events.length, 1);
    assert.equal(events[0].event, 'activity');
    socket.receive(activity(BOB, 'c2', 'idle'));
    assert.equal(events.length, 1, 'an unchanged state emits no event');
  });

  test('close clears the list', async () => {
    const { client } = await createSyncedClient('Hello', 2, [listEntry(BOB, [listClient('c2')])]);
    await client.close();
    assert.deepEqual(client.presence, []);
  });
});

describe('remote selections', () => {
  test('remote delete moves a selection', async () => {
    const text = 'x'.repeat(100);
    const { client, socket } = await createSyncedClient(text, 1, [listEntry(BOB, [listClient('c2')])]);
    socket.receive(cursorUpdate(BOB, 'c2', [{ anchor: 95, head: 100 }], 1));
    assert.deepEqual(selectionsOf(client, 'c2'), [{ anchor: 95, head: 100 }]);

    const events = recordEvents(client, 'presence');
    socket.receive(remoteEdit([{ delete: 20 }], 1));
    assert.deepEqual(selectionsOf(client, 'c2'), [{ anchor: 75, head: 80 }]);
    assert.equal(events.length, 1);
    assert.equal(events[0].event, 'change');
  });

  test('remote insert at a caret leaves it before', async () => {
    const { client, socket } = await createSyncedClient('0123456789abc', 0, [
      listEntry(BOB, [listClient('c2', [{ anchor: 10, head: 10 }])]),
    ]);
    socket.receive(remoteEdit([{ retain: 10 }, { insert: 'XYZ' }], 0, 'c3'));
    assert.deepEqual(selectionsOf(client, 'c2'), [{ anchor: 10, head: 10 }]);
    socket.receive(remoteEdit([{ retain: 2 }, { insert: '--' }], 1, 'c3'));
    assert.deepEqual(selectionsOf(client, 'c2'), [{ anchor: 12, head: 12 }]);
  });

  test('local edit moves a remote caret', async () => {
    const { client } = await createSyncedClient('0123456789', 0, [
      listEntry(BOB, [listClient('c2', [{ anchor: 5, head: 5 }])]),
    ]);
    client.insert(5, 'ab');
    assert.deepEqual(selectionsOf(client, 'c2'), [{ anchor: 5, head: 5 }]);
    client.insert(0, 'xyz');
    assert.deepEqual(selectionsOf(client, 'c2'), [{ anchor: 8, head: 8 }]);
    client.delete(0, 12);
    assert.deepEqual(selectionsOf(client, 'c2'), [{ anchor: 0, head: 0 }]);
  });

  test('cursor update moves over unacknowledged edits', async () => {
    const { client, socket } = await createSyncedClient('0123456789', 3, [listEntry(BOB, [listClient('c2')])]);
    client.insert(0, 'abc'); // in flight
    client.insert(10, 'XY'); // buffered, at 7 of the server's text
    socket.receive(cursorUpdate(BOB, 'c2', [{ anchor: 2, head: 8 }], 3));
    assert.deepEqual(selectionsOf(client, 'c2'), [{ anchor: 5, head: 13 }]);
  });

  test('cursor update at an older version is moved', async () => {
    const { client, socket } = await createSyncedClient('0123456789', 3, [listEntry(BOB, [listClient('c2')])]);
    socket.receive(remoteEdit([{ insert: 'ab' }], 3, 'c3'));
    socket.receive(remoteEdit([{ retain: 4 }, { delete: 3 }], 4, 'c3'));
    assert.equal(client.text, 'ab0156789');
    // The selection 3..9 of version 3 covers "345678", and version 4 deletes its "34".
    socket.receive(cursorUpdate(BOB, 'c2', [{ anchor: 3, head: 9 }], 3));
    assert.deepEqual(selectionsOf(client, 'c2'), [{ anchor: 4, head: 8 }]);
  });

  test('cursor update of an unknown client is ignored', async () => {
    const { client, socket } = await createSyncedClient('Hello', 0);
    const events = recordEvents(client, 'presence');
    socket.receive(cursorUpdate(BOB, 'c9', [{ anchor: 1, head: 1 }], 0));
    assert.equal(events.length, 0);
    assert.deepEqual(client.presence, []);
  });
});

describe('own selections', () => {
  test('setSelections sends a cursor update', async () => {
    const { client, socket } = await createSyncedClient('Hello world', 7);
    client.setSelections([{ anchor: 6, head: 11 }]);
    assert.deepEqual(socket.presenceSent('cursor_update'), [
      { selections: [{ anchor: 6, head: 11 }], version: 7 },
    ]);
  });

  test('setSelections calls are coalesced', async () => {
    const { client, socket } = await createSyncedClient('x'.repeat(200), 0);
    for (let position = 0; position <= 100; position += 1) {
      client.setSelections([{ anchor: position, head: position }]);
    }
    await sleep(120);
    const sent = socket.presenceSent('cursor_update');
    assert.ok(sent.length <= 2, `expected at most 2 cursor updates, got ${sent.length}`);
    assert.deepEqual(sent.at(-1).selections, [{ anchor: 100, head: 100 }]);
  });

  test('unchanged selections are not sent again', async () => {
    const { client, socket } = await createSyncedClient('Hello', 0);
    client.setSelections([{ anchor: 1, head: 1 }]);
    await sleep(60);
    client.setSelections([{ anchor: 1, head: 1 }]);
    await sleep(60);
    assert.equal(socket.presenceSent('cursor_update').length, 1);
  });

  test('invalid selections are rejected', async () => {
    const { client } = await createSyncedClient('Hello', 0);
    assert.throws(() => client.setSelections({ anchor: 1, head: 1 }), TypeError);
    assert.throws(() => client.setSelections([{ anchor: 1, head: 6 }]), RangeError);
    assert.throws(() => client.setSelections([{ anchor: -1, head: 0 }]), RangeError);
    assert.throws(() => client.setSelections([null]), TypeError);
  });

  test('selections in unacknowledged text are sent again after ack', async () => {
    const { client, socket } = await createSyncedClient('Hello', 4);
    client.insert(5, ' world');
    client.setSelections([{ anchor: 11, head: 11 }]);
    // The inserted text has no version yet, so the caret goes at its start.
    assert.deepEqual(socket.presenceSent('cursor_update'), [
      { selections: [{ anchor: 5, head: 5 }], version: 4 },
    ]);
    const [edit] = socket.sent.filter((message) => message.event === 'document_edit');
    socket.receive(ack(edit.message_id, 4));
    await waitFor(() => socket.presenceSent('cursor_update').length === 2, 'the second cursor update');
    assert.deepEqual(socket.presenceSent('cursor_update')[1], {
      selections: [{ anchor: 11, head: 11 }],
      version: 5,
    });
  });

  test('setActivity sends changes only', async () => {
    const { client, socket } = await createSyncedClient('Hello', 0);
    client.setActivity('away');
    client.setActivity('away');
    client.setActivity('active');
    assert.deepEqual(socket.presenceSent('activity'), [{ state: 'away' }, { state: 'active' }]);
    assert.equal(client.activity, 'active');
    assert.throws(() => client.setActivity('asleep'), RangeError);
  });

  test('idle timeout sends idle', async () => {
    const { client, socket } = await createSyncedClient('Hello', 0, [], { idleTimeout: 30 });
    client.setActivity('active');
    await waitFor(() => client.activity === 'idle', 'the idle state');
    assert.deepEqual(socket.presenceSent('activity'), [{ state: 'idle' }]);
    client.setSelections([{ anchor: 2, head: 2 }]);
    assert.equal(client.activity, 'active');
    assert.deepEqual(socket.presenceSent('activity'), [{ state: 'idle' }, { state: 'active' }]);
  });

  test('selections and activity are resent after reconnect', async () => {
    const { client, sockets, socket } = await createSyncedClient('Hello', 3, [], {
      reconnect: { baseDelay: 1, maxDelay: 2 },
    });
    client.setSelections([{ anchor: 1, head: 4 }]);
    client.setActivity('away');
    socket.serverClose(1006);
    await waitFor(() => sockets.length === 2, 'the reconnect');
    const second = sockets[1];
    second.open();
    second.receive(catchUp(3, [listEntry(BOB, [listClient('c2', [{ anchor: 2, head: 2 }])])]));
    await waitFor(() => client.connectionState === 'connected', 'the sync');

    assert.deepEqual(second.presenceSent('cursor_update'), [
      { selections: [{ anchor: 1, head: 4 }], version: 3 },
    ]);
    assert.deepEqual(second.presenceSent('activity'), [{ state: 'away' }]);
    assert.deepEqual(selectionsOf(client, 'c2'), [{ anchor: 2, head: 2 }]);
  });

  test('presence events wait for a pending sync', async () => {
    const { client, socket } = await createSyncedClient('Hello', 0, [listEntry(BOB, [listClient('c2')])]);
    // Version 1 is missing, so the client asks for a catch_up.
    socket.receive(remoteEdit([{ insert: 'b' }], 1));
    socket.receive(cursorUpdate(BOB, 'c2', [{ anchor: 3, head: 3 }], 2));
    assert.deepEqual(selectionsOf(client, 'c2'), []);
    const caughtUp = {
      type: 'system',
      event: 'catch_up',
      data: {
        document_id: DOCUMENT_ID,
        title: 'Notes',
        role: 'editor',
        version: 2,
        operations: [
          { ...remoteEdit([{ insert: 'a' }], 0).data, client_id: 'c2', message_id: 'm-0' },
          { ...remoteEdit([{ insert: 'b' }], 1).data, client_id: 'c2', message_id: 'm-1' },
        ],
        presence: [listEntry(BOB, [listClient('c2', [{ anchor: 4, head: 4 }])])],
      },
    };
    socket.receive(caughtUp);
    assert.equal(client.text, 'baHello');
    // The list in the catch_up is newer than the update that arrived before it.
    assert.deepEqual(selectionsOf(client, 'c2'), [{ anchor: 4, head: 4 }]);
  });
});
