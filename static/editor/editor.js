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
 * Presence: the avatar row shows one avatar per other person, and a mirror layer over
 * the textarea draws their carets and selections (see renderMirror). The editor sends
 * its own selection and activity through the client.
 *
 * This module contains all of the page's DOM code, and realtime.js has none.
 */

import {
  MateriRealtime,
  codePointLength,
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

// A person with several clients shows the most present activity of them.
const ACTIVITY_RANK = { active: 0, idle: 1, away: 2 };
// Minimum time in ms between two setActivity('active') calls from mouse and key events.
const ACTIVITY_THROTTLE = 1000;
// Computed styles of the textarea that the mirror layer copies, so its text wraps
// and scrolls exactly like the textarea's.
const MIRRORED_STYLES = [
  'boxSizing',
  'fontFamily',
  'fontSize',
  'fontStyle',
  'fontVariant',
  'fontWeight',
  'fontStretch',
  'fontFeatureSettings',
  'fontKerning',
  'letterSpacing',
  'lineHeight',
  'tabSize',
  'textIndent',
  'textTransform',
  'textAlign',
  'wordSpacing',
  'wordBreak',
  'whiteSpace',
  'overflowWrap',
  'paddingTop',
  'paddingRight',
  'paddingBottom',
  'paddingLeft',
  'borderTopWidth',
  'borderRightWidth',
  'borderBottomWidth',
  'borderLeftWidth',
  'borderRadius',
];

const config = JSON.parse(document.getElementById('editor-config').textContent);
const textarea = document.getElementById('editor');
const badge = document.getElementById('connection-state');
const latencyOutput = document.getElementById('latency');
const roleOutput = document.getElementById('role');
const saveState = document.getElementById('save-state');
const titleHeading = document.getElementById('document-title');
const errorOutput = document.getElementById('editor-error');
const avatarList = document.getElementById('presence-avatars');
const mirror = document.getElementById('editor-mirror');

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
  scheduleMirrorRender();
});

client.on('change', ({ ops, text, origin }) => {
  if (origin !== 'local') {
    applyRemoteChange(ops, text);
  }
  scheduleMirrorRender();
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

client.on('presence', ({ presence }) => {
  renderAvatars(presence);
  scheduleMirrorRender();
});

// Avatars

/** Returns up to two initials of a display name, one per word. */
function initialsOf(name) {
  const words = name.trim().split(/\s+/).filter((word) => word !== '');
  if (words.length === 0) {
    return '?';
  }
  const first = Array.from(words[0])[0];
  const last = words.length > 1 ? Array.from(words.at(-1))[0] : '';
  return (first + last).toUpperCase();
}

/** Returns the most present activity among a person's clients. */
function activityOf(person) {
  let best = 'away';
  for (const { activity } of person.clients) {
    if (ACTIVITY_RANK[activity] < ACTIVITY_RANK[best]) {
      best = activity;
    }
  }
  return best;
}

function renderAvatars(presence) {
  const items = presence.map((person) => {
    const activity = activityOf(person);
    const item = document.createElement('li');
    item.className = 'avatar';
    item.dataset.userId = String(person.userId);
    item.dataset.activity = activity;
    item.style.setProperty('--presence-color', person.color);
    item.textContent = initialsOf(person.displayName);
    const tabs = person.clients.length > 1 ? `, ${person.clients.length} tabs` : '';
    item.title = `${person.displayName} (${activity}${tabs})`;
    item.setAttribute('aria-label', item.title);
    return item;
  });
  avatarList.replaceChildren(...items);
}

// Remote cursors

let mirrorFrame = null;

/** Gives the mirror layer the textarea's box, text metrics and scroll position. */
function syncMirrorBox() {
  const style = getComputedStyle(textarea);
  for (const property of MIRRORED_STYLES) {
    mirror.style[property] = style[property];
  }
  // The layer has no scrollbar, so its right padding also covers the width of the
  // textarea's scrollbar, or its lines would wrap later.
  const borders = parseFloat(style.borderLeftWidth) + parseFloat(style.borderRightWidth);
  const scrollbar = Math.max(0, textarea.offsetWidth - textarea.clientWidth - borders);
  mirror.style.paddingRight = `${parseFloat(style.paddingRight) + scrollbar}px`;
  mirror.style.setProperty('--mirror-line-height', style.lineHeight);
  mirror.style.top = `${textarea.offsetTop}px`;
  mirror.style.left = `${textarea.offsetLeft}px`;
  mirror.style.width = `${textarea.offsetWidth}px`;
  mirror.style.height = `${textarea.offsetHeight}px`;
  syncMirrorScroll();
}

function syncMirrorScroll() {
  mirror.scrollTop = textarea.scrollTop;
  mirror.scrollLeft = textarea.scrollLeft;
}

function scheduleMirrorRender() {
  if (mirrorFrame === null) {
    mirrorFrame = requestAnimationFrame(() => {
      mirrorFrame = null;
      renderMirror();
    });
  }
}

/**
 * Collects the highlighted ranges and carets of every remote client, with positions
 * clamped to `length` code points.
 */
function collectDecorations(presence, length) {
  const highlights = [];
  const carets = [];
  for (const person of presence) {
    for (const remote of person.clients) {
      for (const { anchor, head } of remote.selections) {
        const from = Math.min(anchor, head, length);
        const to = Math.min(Math.max(anchor, head), length);
        if (from < to) {
          highlights.push({ from, to, color: person.color });
        }
        carets.push({
          position: Math.min(head, length),
          person,
          clientId: remote.clientId,
          activity: remote.activity,
        });
      }
    }
  }
  return { highlights, carets };
}

function createCaret({ position, person, clientId, activity }) {
  const caret = document.createElement('span');
  caret.className = 'remote-caret';
  caret.dataset.position = String(position);
  caret.dataset.userId = String(person.userId);
  caret.dataset.clientId = clientId;
  caret.dataset.activity = activity;
  caret.style.setProperty('--presence-color', person.color);
  const label = document.createElement('span');
  label.className = 'remote-caret-label';
  label.textContent = person.displayName;
  caret.append(label);
  return caret;
}

/**
 * Fills the mirror layer with the textarea's text, split at every selection edge and
 * caret of the other people. Text is transparent, so only the selection backgrounds
 * and the carets show over the textarea. Positions are code points, and the text is
 * cut at UTF-16 offsets.
 */
function renderMirror() {
  const text = textarea.value;
  const length = codePointLength(text);
  const { highlights, carets } = collectDecorations(client.presence, length);
  const boundaries = new Set([0, length]);
  for (const { from, to } of highlights) {
    boundaries.add(from);
    boundaries.add(to);
  }
  for (const { position } of carets) {
    boundaries.add(position);
  }
  const sorted = [...boundaries].sort((a, b) => a - b);

  const nodes = [];
  for (let index = 0; index < sorted.length; index += 1) {
    const start = sorted[index];
    for (const caret of carets) {
      if (caret.position === start) {
        nodes.push(createCaret(caret));
      }
    }
    if (index + 1 === sorted.length) {
      break;
    }
    const end = sorted[index + 1];
    const slice = text.slice(codePointToUtf16Offset(text, start), codePointToUtf16Offset(text, end));
    // Where several people's selections overlap, the last person's colour is drawn.
    const cover = highlights.filter(({ from, to }) => from <= start && to >= end).at(-1);
    if (cover === undefined) {
      nodes.push(document.createTextNode(slice));
    } else {
      const span = document.createElement('span');
      span.className = 'remote-selection';
      span.style.setProperty('--presence-color', cover.color);
      span.textContent = slice;
      nodes.push(span);
    }
  }
  // A textarea shows an empty last line after a trailing line break, but a div shows
  // it only when something follows the break.
  nodes.push(document.createTextNode('\u200b'));
  mirror.replaceChildren(...nodes);
  syncMirrorScroll();
}

// Own selection and activity

/**
 * Sends the textarea's selection as this client's selection, in code points, while
 * the textarea has focus. Chrome also fires `select` when a script sets the value of
 * a textarea without focus, and that selection shows no caret.
 */
function sendLocalSelection() {
  const value = textarea.value;
  if (!synced || document.activeElement !== textarea || value !== client.text) {
    // Until the input handler has submitted an edit, the textarea's offsets refer to
    // a text the client does not have.
    return;
  }
  const { start, end, direction } = readSelection();
  const backward = direction === 'backward';
  client.setSelections([{ anchor: backward ? end : start, head: backward ? start : end }]);
}

let lastActivitySignal = 0;

/** Reports the user as active, at most once per ACTIVITY_THROTTLE ms unless the state changes. */
function markActive() {
  if (document.visibilityState === 'hidden') {
    return;
  }
  const now = Date.now();
  if (client.activity === 'active' && now - lastActivitySignal < ACTIVITY_THROTTLE) {
    return;
  }
  lastActivitySignal = now;
  client.setActivity('active');
}

function updateVisibility() {
  if (document.visibilityState === 'hidden') {
    client.setActivity('away');
  } else {
    lastActivitySignal = Date.now();
    client.setActivity('active');
  }
}

// DOM events

textarea.addEventListener('input', submitLocalEdit);

for (const type of ['select', 'keyup', 'mouseup', 'input', 'focus']) {
  textarea.addEventListener(type, sendLocalSelection);
}
textarea.addEventListener('input', scheduleMirrorRender);
textarea.addEventListener('scroll', syncMirrorScroll);
for (const type of ['input', 'keydown', 'pointerdown', 'pointermove', 'wheel']) {
  document.addEventListener(type, markActive, { passive: true });
}
document.addEventListener('visibilitychange', updateVisibility);
new ResizeObserver(() => {
  syncMirrorBox();
  scheduleMirrorRender();
}).observe(textarea);
window.addEventListener('resize', syncMirrorBox);
if (document.visibilityState === 'hidden') {
  client.setActivity('away');
}

window.addEventListener('beforeunload', (event) => {
  if (client.hasPendingEdits) {
    // Browsers show their own text, and preventDefault() only requests the prompt.
    event.preventDefault();
  }
});

client.connect().catch((error) => {
  showError(error.message);
});
