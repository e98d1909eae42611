/**
 * The editor page: binds the page's <textarea> to a MateriRealtime client.
 *
 * Local edits: every `input` event (typing, paste, cut, delete, browser undo, IME
 * composition) diffs the textarea's value against the client's text and submits the
 * difference, so the two are equal again when the handler returns.
 *
 * Remote edits: the client's `change` event carries the operation that turned the
 * previous local text into the new one. The handler sets the textarea's value and
 * moves the selection through that operation with transformPosition(), so the caret
 * stays next to the same character. Operations count Unicode code points and the
 * textarea counts UTF-16 units, so offsets are converted both ways.
 *
 * This module contains all of the page's DOM code, and realtime.js has none.
 */

import {
  MateriRealtime,
  codePointToUtf16Offset,
  diff,
  transformPosition,
  utf16ToCodePointOffset,
} from '../materi/realtime.js';

const STATE_LABELS = {
  connecting: 'Connecting…',
  connected: 'Connected',
  disconnected: 'Disconnected',
  reconnecting: 'Reconnecting…',
  closing: 'Closing…',
  failed: 'Connection failed',
};

const ROLE_LABELS = {
  owner: 'Owner',
  editor: 'Editor',
  commenter: 'Commenter (read-only here)',
  viewer: 'Viewer (read-only)',
};

const EDIT_ROLES = new Set(['owner', 'editor']);

const config = JSON.parse(document.getElementById('editor-config').textContent);
const textarea = document.getElementById('editor');
const badge = document.getElementById('connection-state');
const latencyOutput = document.getElementById('latency');
const roleOutput = document.getElementById('role');
const saveState = document.getElementById('save-state');
const titleHeading = document.getElementById('document-title');
const errorOutput = document.getElementById('editor-error');

let role = config.role;
let synced = false;
let failed = false;
// Set when the textarea cannot show the document's text exactly (see showText).
let textMismatch = false;

/** Fetches a fresh access token for the signed-in user with the session cookie. */
async function fetchSessionToken() {
  const response = await fetch(config.sessionTokenUrl, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { Accept: 'application/json', 'X-CSRFToken': config.csrfToken },
  });
  if (!response.ok) {
    throw new Error(
      `POST ${config.sessionTokenUrl} failed with HTTP ${response.status}. Sign in again.`,
    );
  }
  const body = await response.json();
  return body.access;
}

const client = new MateriRealtime({
  accessToken: config.accessToken,
  documentId: config.documentId,
  url: config.websocketUrl,
  tokenProvider: fetchSessionToken,
  debug: new URLSearchParams(window.location.search).has('debug'),
});

// Status line

function canEdit() {
  return synced && !failed && !textMismatch && EDIT_ROLES.has(role);
}

function updateReadOnly() {
  textarea.readOnly = !canEdit();
}

function showConnectionState(state, reason) {
  badge.dataset.state = state;
  badge.textContent = STATE_LABELS[state] ?? state;
  badge.title = reason ?? '';
}

function showRole(newRole) {
  role = newRole;
  roleOutput.dataset.role = newRole;
  roleOutput.textContent = ROLE_LABELS[newRole] ?? newRole;
  updateReadOnly();
}

function showSaveState() {
  const pending = client.hasPendingEdits;
  saveState.dataset.pending = String(pending);
  if (!pending) {
    saveState.textContent = 'All changes saved';
  } else if (client.connectionState === 'connected') {
    saveState.textContent = 'Saving…';
  } else {
    saveState.textContent = 'Unsaved changes, waiting for the connection';
  }
}

function showError(message) {
  errorOutput.textContent = message;
  errorOutput.hidden = false;
}

function clearError() {
  errorOutput.hidden = true;
  errorOutput.textContent = '';
}

// Text and selection

/** Returns the textarea's selection in code points of its current value. */
function readSelection() {
  const value = textarea.value;
  return {
    start: utf16ToCodePointOffset(value, textarea.selectionStart),
    end: utf16ToCodePointOffset(value, textarea.selectionEnd),
    direction: textarea.selectionDirection,
  };
}

/**
 * Sets the textarea's value and returns whether it kept the text exactly. A textarea
 * turns "\r\n" and "\r" into "\n", and a document with carriage returns would then
 * differ from its textarea, so the editor stops editing it.
 */
function showText(text) {
  textarea.value = text;
  if (textarea.value === text) {
    return true;
  }
  textMismatch = true;
  updateReadOnly();
  showError(
    'This document contains carriage return characters, which a text box cannot ' +
      'keep, so it is read-only here. Edit it with an SDK client instead.',
  );
  return false;
}

/** Shows the client's new text after a remote or sync change and keeps the selection. */
function applyRemoteChange(ops, text) {
  const selection = readSelection();
  const scrollTop = textarea.scrollTop;
  let start;
  let end;
  if (selection.start === selection.end) {
    // A remote insert exactly at the caret leaves the caret before it.
    start = transformPosition(selection.start, ops, false);
    end = start;
  } else {
    // A remote insert at either edge of a selection stays outside it.
    start = transformPosition(selection.start, ops, true);
    end = Math.max(start, transformPosition(selection.end, ops, false));
  }
  // NOTE: setting the value during an IME composition can cancel the composition.
  // No test covers a remote change that arrives while one is open.
  if (!showText(text)) {
    return;
  }
  textarea.setSelectionRange(
    codePointToUtf16Offset(text, start),
    codePointToUtf16Offset(text, end),
    selection.direction,
  );
  textarea.scrollTop = scrollTop;
}

/** Submits the difference between the client's text and the textarea's value. */
function submitLocalEdit() {
  const value = textarea.value;
  if (!canEdit()) {
    // A read-only textarea fires no input events, so this runs only when the role or
    // the connection changed during the edit. Reverting keeps the two texts equal.
    showText(client.text);
    return;
  }
  const ops = diff(client.text, value);
  if (ops.length === 0) {
    return;
  }
  try {
    client.submit(ops);
  } catch (error) {
    showError(`The edit could not be applied: ${error.message}`);
    showText(client.text);
  }
  showSaveState();
}

// Client events

client.on('connection_state', ({ state, reason }) => {
  showConnectionState(state, reason);
  if (state === 'failed') {
    failed = true;
    updateReadOnly();
    showError(`The connection failed: ${reason}. Reload the page to try again.`);
  }
  showSaveState();
});

client.on('state', ({ text, role: newRole }) => {
  synced = true;
  if (textarea.value !== text) {
    showText(text);
  }
  textarea.placeholder = EDIT_ROLES.has(newRole) ? 'Start typing…' : '';
  if (client.title) {
    titleHeading.textContent = client.title;
    document.title = `${client.title} · Materi Realtime`;
  }
  showRole(newRole);
  showSaveState();
});

client.on('change', ({ ops, text, origin }) => {
  if (origin === 'local') {
    return;
  }
  applyRemoteChange(ops, text);
});

client.on('ack', () => {
  clearError();
  showSaveState();
});

client.on('heartbeat', (milliseconds) => {
  latencyOutput.textContent = `${Math.round(milliseconds)} ms`;
});

client.on('error', ({ code, message }) => {
  showError(`The server reported ${code}: ${message}`);
  showSaveState();
});

// DOM events

textarea.addEventListener('input', submitLocalEdit);

window.addEventListener('beforeunload', (event) => {
  if (client.hasPendingEdits) {
    // Browsers show their own text, and preventDefault() only requests the prompt.
    event.preventDefault();
  }
});

client.connect().catch((error) => {
  showError(error.message);
});
