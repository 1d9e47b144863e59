// The Raclette node's web page: explorer, network, wallet and mining views over the
// node's local JSON API. Plain DOM code, no framework and no build step, because the
// file is embedded in the node binary and must work offline.
//
// Security rules kept throughout:
// - Text from the API only ever reaches the page through el()/setText(), which pass it
//   through safe() and insert it as text nodes: never innerHTML, so a name or a message
//   cannot inject markup, and control characters are shown escaped so a sender cannot
//   hide or fake content.
// - The token lives in sessionStorage (this tab only) and leaves the URL at once.
"use strict";

const TOKEN_KEY = "raclette-token";
const NO_TOKEN_MESSAGE =
  "Open the link the node printed at start (web: http://.../#token=...)";
const BLOCKS_PER_PAGE = 20;
const NOTICES_KEPT = 5;
const REFRESH_DELAY_MS = 300; // at most one refresh per this period, however many events
const STATUS_POLL_MS = 5000; // fallback for when the event stream is down
const RECONNECT_MS = 2000;
// The node sends a keep-alive comment every 15 s; silence much longer than that means
// the connection died without closing, so we drop it and reconnect.
const STREAM_SILENCE_MS = 45000;

// ---------------------------------------------------------------------------
// Text safety and DOM helpers

// C0 and C1 control characters (the same set as Rust's char::is_control, which the
// node's terminal REPL escapes the same way), written \xNN.
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f]/g;
// Bidirectional overrides and isolates: a browser (unlike a terminal) obeys them, so
// "carol\u202eevil" would show as "carollive". Written \uNNNN.
const BIDI_CONTROLS = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/** `text` as it may be shown: control characters written as escapes (\x1b, \u202e). */
function safe(text) {
  if (text === null || text === undefined) return "";
  return String(text)
    .replace(CONTROL_CHARACTERS, (c) => "\\x" + c.charCodeAt(0).toString(16).padStart(2, "0"))
    .replace(BIDI_CONTROLS, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
}

const SHOWN_ATTRIBUTES = new Set(["title", "placeholder", "aria-label", "alt"]);

/**
 * A new element. `props`: "class", "text", "on<event>" handlers, other keys become
 * attributes. Children: nodes, or strings (inserted as text through safe()); null,
 * undefined and false are skipped so callers can write conditions inline.
 */
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = safe(value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, "");
    // Attributes the user reads are made safe; the others (values, data-*) stay exact
    // because the page uses them as data (a peer's name to send to, a txid).
    else node.setAttribute(key, SHOWN_ATTRIBUTES.has(key) ? safe(value) : String(value));
  }
  appendAll(node, children);
  return node;
}

function appendAll(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(safe(child)));
  }
}

/** Replaces the content of `node` (an element or an id) with `children`. */
function fill(node, ...children) {
  const target = typeof node === "string" ? document.getElementById(node) : node;
  if (!target) return;
  target.replaceChildren();
  appendAll(target, children);
}

function setText(id, text) {
  const node = document.getElementById(id);
  if (node) node.textContent = safe(text);
}

function link(href, text, title) {
  return el("a", { href, title }, text);
}

function muted(text) {
  return el("span", { class: "muted" }, text);
}

function errorLine(message) {
  return el("span", { class: "error" }, message);
}

// ---------------------------------------------------------------------------
// Formatting

const HEX64 = /^[0-9a-fA-F]{64}$/;

/** The first 12 hex digits, enough to tell hashes apart (the REPL shows the same). */
function short(hash) {
  return safe(hash).slice(0, 12);
}

/** Peer ids all start alike ("16Uiu2HAm…"), so keep both ends. */
function shortPeerId(id) {
  const text = safe(id);
  return text.length > 18 ? `${text.slice(0, 8)}…${text.slice(-6)}` : text;
}

function blockHref(id) {
  return `#/block/${encodeURIComponent(String(id))}`;
}

function txHref(txid) {
  return `#/tx/${encodeURIComponent(String(txid))}`;
}

function blockLink(height) {
  return link(blockHref(height), String(height));
}

/** A hash shortened in a link whose tooltip holds all of it. */
function hashLink(href, hash) {
  return el("a", { href, title: hash, class: "mono" }, short(hash));
}

/** How long ago `ms` (unix ms) was, in its largest whole unit. */
function age(ms) {
  if (!ms) return "never";
  const seconds = Math.max(0, Math.floor((Date.now() - ms) / 1000));
  if (seconds < 60) return `${seconds}s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ago`;
  return `${Math.floor(seconds / 86400)}d ago`;
}

/** An element showing the age of `ms`, kept current by the once-a-second ticker. */
function ageNode(ms) {
  return el("span", { class: "age", "data-time": ms, title: dateTime(ms) }, age(ms));
}

function dateTime(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  const two = (n) => String(n).padStart(2, "0");
  return (
    `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ` +
    `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`
  );
}

/** Hashes per second with a unit, as the REPL writes it: "1.23 MH/s". */
function hashRate(rate) {
  const r = Number(rate) || 0;
  if (r >= 1e9) return `${(r / 1e9).toFixed(2)} GH/s`;
  if (r >= 1e6) return `${(r / 1e6).toFixed(2)} MH/s`;
  if (r >= 1e3) return `${(r / 1e3).toFixed(1)} kH/s`;
  return `${r.toFixed(0)} H/s`;
}

/**
 * An amount for display. The API sends decimal strings, shown as they are (never turned
 * into floats). A bare number is a count of the smallest unit (10^-8 coin): it is
 * written out by moving the decimal point in its digits, not by float division.
 */
function amount(value) {
  if (typeof value !== "number") return safe(value);
  const digits = String(Math.trunc(value)).padStart(9, "0");
  const whole = digits.slice(0, -8);
  const fraction = digits.slice(-8).replace(/0+$/, "");
  return fraction ? `${whole}.${fraction}` : whole;
}

/** A transaction's text: "(encrypted)" when this node cannot read it. */
function messageNode(message) {
  if (message === null || message === undefined) return muted("(encrypted)");
  if (message === "") return muted("—");
  return el("span", { class: "message" }, message);
}

function orDash(value) {
  return value === null || value === undefined || value === "" ? muted("—") : value;
}

// ---------------------------------------------------------------------------
// Token and API calls

function getToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/**
 * Moves a token from the URL ("#token=…") to sessionStorage and takes it out of the URL
 * (and so out of history and bookmarks). Returns whether there was one.
 */
function adoptTokenFromUrl() {
  if (!location.hash.startsWith("#token=")) return false;
  let token = location.hash.slice("#token=".length);
  try {
    token = decodeURIComponent(token);
  } catch {
    // A malformed escape: keep the text as given.
  }
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  history.replaceState(null, "", `${location.pathname}${location.search}#/`);
  return true;
}

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

/** GET `path`, or POST `body` as JSON to it; the answer's JSON, or an ApiError. */
async function api(path, body) {
  const token = getToken();
  if (!token) {
    showNoToken();
    throw new ApiError(NO_TOKEN_MESSAGE, 401);
  }
  const init = { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    setOffline(true);
    throw new ApiError("Cannot reach the node: is it still running?", 0);
  }
  setOffline(false);
  if (response.status === 401) {
    // The token is wrong for this start of the node (it changes at every start).
    sessionStorage.removeItem(TOKEN_KEY);
    showNoToken();
    throw new ApiError(NO_TOKEN_MESSAGE, 401);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    // Not JSON: handled below as an error without a sentence.
  }
  if (!response.ok) {
    const sentence = data && typeof data.error === "string" ? data.error : null;
    throw new ApiError(sentence || `The node answered HTTP ${response.status}.`, response.status);
  }
  return data;
}

/**
 * A function that runs `load` and hands the result to `show` (or the error to `fail`),
 * unless it was called again meanwhile: a slow old answer never overwrites a newer one.
 */
function freshest(load, show, fail) {
  let latest = 0;
  return async () => {
    const call = ++latest;
    try {
      const data = await load();
      if (call === latest) show(data);
    } catch (error) {
      if (call === latest && fail) fail(error);
    }
  };
}

// ---------------------------------------------------------------------------
// Shared state

const state = {
  status: null, // last GET /api/status
  hashRate: 0, // latest known, from mining notices or the status
  miningHeight: null, // the height a "mining" notice last named
  mining: { inFlight: false, result: null, details: null, error: false },
  live: false,
  view: null, // the visible view: { refresh(), onStatus?(status) }
};

// ---------------------------------------------------------------------------
// Header strip

function setOffline(offline) {
  const badge = document.getElementById("offline-badge");
  if (badge) badge.hidden = !offline;
}

function setLive(live) {
  state.live = live;
  const node = document.getElementById("live");
  node.classList.toggle("on", live);
  node.title = live ? "live updates: connected" : "live updates: not connected";
}

function showStatus(status) {
  state.status = status;
  state.hashRate = status.hash_rate;
  if (!status.mining) state.miningHeight = null;
  setText("node-name", status.name);
  setText("network-name", status.network_name);
  document.getElementById("network-name").title = safe(status.network);
  setText("height", status.height);
  setText("peer-count", status.peers);
  document.getElementById("syncing-badge").hidden = !status.syncing;
  document.title = `${safe(status.name)} · height ${status.height} · Raclette`;
  if (state.view && state.view.onStatus) state.view.onStatus(status);
}

const refreshStatus = freshest(() => api("/api/status"), showStatus);

let refreshTimer = null;

/** Refreshes the header and the visible view soon, at most once per REFRESH_DELAY_MS. */
function scheduleRefresh() {
  if (refreshTimer !== null) return;
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    if (!getToken()) return;
    refreshStatus();
    if (state.view) state.view.refresh();
  }, REFRESH_DELAY_MS);
}

// ---------------------------------------------------------------------------
// Notices

/** One line for a notice, or null for those that only update numbers. */
function noticeSentence(event) {
  switch (event.kind) {
    case "received": {
      const text = event.text ? `: ${safe(event.text)}` : "";
      const place =
        event.height === null || event.height === undefined
          ? " (pending until mined)"
          : ` (in block ${event.height})`;
      return `${safe(event.from)} sent you ${amount(event.amount)}${text}${place}`;
    }
    case "block_from_peer":
      return `${safe(event.miner)} mined block ${event.height}`;
    case "mined":
      return `you mined block ${event.height} (${short(event.hash)})`;
    case "lost":
      return `${safe(event.winner)} won block ${event.height}`;
    case "reorganized":
      return `reorganized: ${event.disconnected} off, ${event.connected} on`;
    case "synced":
      return `caught up at block ${event.height}`;
    case "peer_joined":
      return `${safe(event.name)} joined`;
    case "name_refused":
      return `name refused: ${safe(event.reason)}`;
    case "name_contested":
      return `${safe(event.reason)}; the other trackers keep it for you`;
    default:
      return null; // tip, mining, syncing: frequent, shown in the header and views
  }
}

function addNotice(sentence, isError) {
  const list = document.getElementById("notices");
  const time = dateTime(Date.now()).slice(11);
  list.prepend(
    el("li", { class: isError ? "error" : null }, el("time", {}, time), el("span", {}, sentence)),
  );
  while (list.children.length > NOTICES_KEPT) list.lastElementChild.remove();
}

function onEvent(event) {
  const sentence = noticeSentence(event);
  if (sentence) addNotice(sentence, event.kind === "name_refused");
  if (event.kind === "mining") {
    state.hashRate = event.rate;
    state.miningHeight = event.height;
    showMiningFacts();
  }
  scheduleRefresh();
}

// ---------------------------------------------------------------------------
// Event stream (fetch, because EventSource cannot send the Authorization header)

/** Follows /api/events for as long as the page is open, reconnecting after a drop. */
async function followEvents() {
  for (;;) {
    if (getToken()) {
      try {
        await readEvents(getToken());
      } catch {
        // The connection failed or dropped: retried below.
      }
      setLive(false);
    }
    await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
  }
}

async function readEvents(token) {
  const abort = new AbortController();
  let watchdog = setTimeout(() => abort.abort(), STREAM_SILENCE_MS);
  try {
    const response = await fetch("/api/events", {
      headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream" },
      cache: "no-store",
      signal: abort.signal,
    });
    if (response.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showNoToken();
      return;
    }
    if (!response.ok || !response.body) return;
    setLive(true);
    scheduleRefresh(); // whatever happened while we were not listening
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      clearTimeout(watchdog);
      watchdog = setTimeout(() => abort.abort(), STREAM_SILENCE_MS);
      // "\r\n" may be split across chunks, so normalise the whole buffer.
      buffer = (buffer + decoder.decode(value, { stream: true })).replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = parseEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event) onEvent(event);
      }
    }
  } finally {
    clearTimeout(watchdog);
  }
}

/** The JSON of one SSE event block, or null (keep-alive comments, bad data). */
function parseEvent(block) {
  const data = block
    .split("\n")
    .filter((line) => line.startsWith("data:"))
    .map((line) => line.slice(5).replace(/^ /, ""))
    .join("\n");
  if (!data) return null;
  try {
    const event = JSON.parse(data);
    return event && typeof event.kind === "string" ? event : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------
// Building blocks of views

function section(title, ...children) {
  return el("section", { class: "card" }, el("h2", {}, title), ...children);
}

/**
 * A table with `columns` ([label, class] pairs; the class sizes the column and, on a
 * phone, the label is shown beside each cell of a stacked table).
 */
function table(id, columns, options = {}) {
  const body = el("tbody");
  const head = el(
    "thead",
    {},
    el("tr", {}, columns.map(([label, cls]) => el("th", { class: cls, scope: "col" }, label))),
  );
  const node = el("table", { id, class: options.stack ? "stack" : null }, head, body);
  node.columns = columns;
  return { node, body, columns };
}

/** A body row: each cell gets its column's class and label. */
function row(tableInfo, attributes, cells) {
  return el(
    "tr",
    attributes,
    cells.map((cell, i) => {
      const [label, cls] = tableInfo.columns[i];
      // The span keeps a cell's pieces together when a phone stacks it as a grid.
      return el("td", { class: cls, "data-label": label }, el("span", {}, cell));
    }),
  );
}

/** Fills a table body with rows, or with one full-width line when there are none. */
function fillRows(tableInfo, rows, emptyText) {
  if (rows.length) fill(tableInfo.body, rows);
  else fill(tableInfo.body, messageRow(tableInfo, muted(emptyText)));
}

function messageRow(tableInfo, content) {
  return el("tr", { class: "empty" }, el("td", { colspan: tableInfo.columns.length }, content));
}

function failRows(tableInfo) {
  return (error) => fill(tableInfo.body, messageRow(tableInfo, errorLine(error.message)));
}

/** A list of label/value pairs; values may be nodes. Returns {node, set(key, ...)}. */
function facts(entries) {
  const values = {};
  const node = el(
    "dl",
    { class: "facts" },
    entries.map(([key, label, id]) => {
      values[key] = el("dd", { id }, muted("…"));
      return [el("dt", {}, label), values[key]];
    }),
  );
  return { node, set: (key, ...content) => fill(values[key], ...content) };
}

// ---------------------------------------------------------------------------
// Explorer: latest blocks and the mempool

function renderExplorer(view) {
  const blocks = table("blocks", [
    ["Height", "col-height"],
    ["Hash", "col-hash"],
    ["Miner", "col-name"],
    ["Txs", "col-num"],
    ["Age", "col-age"],
  ]);
  const mempool = table("mempool", [
    ["Txid", "col-hash"],
    ["From", "col-name"],
    ["To", "col-name"],
    ["Amount", "col-amount"],
    ["Fee", "col-amount"],
  ]);
  let newest = []; // the live first page
  let older = []; // pages loaded with the "older blocks" button, below it
  const olderButton = el(
    "button",
    { type: "button", class: "secondary", id: "older-blocks" },
    "Older blocks",
  );

  const showBlocks = () => {
    const lowestNewest = newest.length ? newest[newest.length - 1].height : Infinity;
    const all = newest.concat(older.filter((b) => b.height < lowestNewest));
    fillRows(blocks, all.map(blockRow), "no blocks");
    const lowest = all.length ? all[all.length - 1].height : 0;
    olderButton.hidden = lowest === 0 || newest.length < BLOCKS_PER_PAGE;
  };
  const blockRow = (b) =>
    row(blocks, { "data-height": b.height }, [
      blockLink(b.height),
      hashLink(blockHref(b.hash), b.hash),
      b.miner,
      String(b.txs),
      ageNode(b.time),
    ]);

  const refreshBlocks = freshest(
    () => api(`/api/blocks?limit=${BLOCKS_PER_PAGE}`),
    (list) => {
      newest = list;
      showBlocks();
    },
    failRows(blocks),
  );
  const refreshMempool = freshest(
    () => api("/api/mempool"),
    (list) => {
      const rows = list.map((tx) =>
        row(mempool, { "data-txid": tx.txid }, [
          hashLink(txHref(tx.txid), tx.txid),
          tx.from,
          tx.to,
          amount(tx.amount),
          amount(tx.fee),
        ]),
      );
      fillRows(mempool, rows, "nothing pending");
    },
    failRows(mempool),
  );

  // "from" pages down from a height; asking from the lowest one shown and dropping what
  // is already there works whether the API counts "from" in or not.
  olderButton.addEventListener("click", async () => {
    const all = newest.concat(older);
    const lowest = Math.min(...all.map((b) => b.height));
    olderButton.disabled = true;
    try {
      const page = await api(`/api/blocks?limit=${BLOCKS_PER_PAGE}&from=${lowest}`);
      older = older.concat(page.filter((b) => b.height < lowest));
      showBlocks();
    } catch (error) {
      addNotice(error.message, true);
    } finally {
      olderButton.disabled = false;
    }
  });

  view.append(
    section("Latest blocks", el("div", { class: "table-wrap" }, blocks.node), olderButton),
    section("Mempool", el("div", { class: "table-wrap" }, mempool.node)),
  );
  fillRows(blocks, [], "loading…");
  fillRows(mempool, [], "loading…");
  return {
    refresh() {
      refreshBlocks();
      refreshMempool();
    },
  };
}

// ---------------------------------------------------------------------------
// Block

function renderBlock(view, id) {
  const info = facts([
    ["height", "Height"],
    ["hash", "Hash"],
    ["prev", "Previous"],
    ["miner", "Miner"],
    ["time", "Time"],
    ["bits", "Bits"],
    ["nonce", "Nonce"],
    ["best", "Best chain"],
    ["received", "Received"],
  ]);
  const txs = table(
    "block-txs",
    [
      ["Txid", "col-hash"],
      ["Kind", "col-kind"],
      ["From", "col-name"],
      ["To", "col-name"],
      ["Amount", "col-amount"],
      ["Fee", "col-amount"],
      ["Message", "col-message"],
    ],
    { stack: true },
  );
  const title = el("h2", {}, "Block");
  const steps = el("div", { class: "steps" });
  const problem = el("p", { class: "error", hidden: true });
  const body = el(
    "div",
    {},
    info.node,
    el("h3", {}, "Transactions"),
    el("div", { class: "table-wrap" }, txs.node),
  );
  view.append(
    el(
      "section",
      { class: "card", id: "block-view" },
      el("div", { class: "title-row" }, title, steps),
      problem,
      body,
    ),
  );
  fillRows(txs, [], "loading…");

  const show = (b) => {
    problem.hidden = true;
    body.hidden = false;
    fill(title, `Block ${b.height}`);
    const isGenesis = b.height === 0;
    const tipHeight = state.status ? state.status.height : null;
    fill(
      steps,
      isGenesis ? null : link(blockHref(b.height - 1), "← previous"),
      b.best_chain && tipHeight !== null && b.height < tipHeight
        ? link(blockHref(b.height + 1), "next →")
        : null,
    );
    info.set("height", String(b.height));
    info.set("hash", el("span", { class: "mono full" }, b.hash));
    info.set(
      "prev",
      isGenesis
        ? el("span", { class: "mono full muted" }, b.prev)
        : el("a", { href: blockHref(b.prev), class: "mono full" }, b.prev),
    );
    info.set("miner", b.miner);
    info.set("time", `${dateTime(b.time)} (`, ageNode(b.time), ")");
    info.set("bits", el("span", { class: "mono" }, b.bits));
    info.set("nonce", String(b.nonce));
    info.set("best", b.best_chain ? "yes" : el("span", { class: "warn" }, "no (a side branch)"));
    info.set("received", b.received ? dateTime(b.received) : muted("—"));
    const rows = b.transactions.map((tx) =>
      row(txs, { "data-txid": tx.txid }, [
        hashLink(txHref(tx.txid), tx.txid),
        tx.kind,
        tx.kind === "coinbase" ? muted("(new coins)") : orDash(tx.from),
        tx.to,
        amount(tx.amount),
        tx.fee === null || tx.fee === undefined ? muted("—") : amount(tx.fee),
        messageNode(tx.message),
      ]),
    );
    fillRows(txs, rows, "no transactions");
  };
  const fail = (error) => {
    fill(title, "Block");
    fill(problem, error.message);
    problem.hidden = false;
    body.hidden = true;
  };

  if (!/^\d+$/.test(id) && !HEX64.test(id)) {
    fail(new Error(`"${safe(id)}" is neither a block height nor a 64-digit block hash.`));
    return { refresh() {} };
  }
  const refresh = freshest(() => api(`/api/block/${encodeURIComponent(id)}`), show, fail);
  return { refresh };
}

// ---------------------------------------------------------------------------
// Transaction

function renderTx(view, txid) {
  const info = facts([
    ["txid", "Txid"],
    ["status", "Status"],
    ["kind", "Kind"],
    ["from", "From"],
    ["to", "To"],
    ["amount", "Amount"],
    ["fee", "Fee"],
    ["message", "Message"],
  ]);
  const problem = el("p", { class: "error", hidden: true });
  view.append(
    el("section", { class: "card", id: "tx-view" }, el("h2", {}, "Transaction"), problem, info.node),
  );

  const show = (tx) => {
    problem.hidden = true;
    info.node.hidden = false;
    info.set("txid", el("span", { class: "mono full" }, tx.txid));
    info.set(
      "status",
      tx.status === "confirmed" && tx.height !== null && tx.height !== undefined
        ? ["confirmed in block ", blockLink(tx.height)]
        : tx.status,
    );
    info.set("kind", tx.kind);
    info.set("from", tx.kind === "coinbase" ? muted("(new coins)") : orDash(tx.from));
    info.set("to", tx.to);
    info.set("amount", amount(tx.amount));
    info.set("fee", tx.fee === null || tx.fee === undefined ? muted("—") : amount(tx.fee));
    info.set("message", messageNode(tx.message));
  };
  const fail = (error) => {
    fill(problem, error.message);
    problem.hidden = false;
    info.node.hidden = true;
  };

  if (!HEX64.test(txid)) {
    fail(new Error(`"${safe(txid)}" is not a transaction id (64 hex digits).`));
    return { refresh() {} };
  }
  const refresh = freshest(() => api(`/api/tx/${encodeURIComponent(txid)}`), show, fail);
  return { refresh };
}

// ---------------------------------------------------------------------------
// Network

function peerState(peer) {
  if (peer.connected) return peer.link ? `connected (${safe(peer.link)})` : "connected";
  if (!peer.last_seen) return "not connected, never seen";
  return `not connected, last seen ${age(peer.last_seen)}`;
}

function renderNetwork(view) {
  const info = facts([
    ["sync", "Sync", "sync"],
    ["reachability", "Reachability", "reachability"],
    ["rate", "This node's hash rate", "network-hash-rate"],
    ["difficulty", "Difficulty", "difficulty"],
    ["mempool", "Mempool", null],
  ]);
  const peers = table("peers", [
    ["Name", "col-name"],
    ["Key", "col-key"],
    ["Peer id", "col-peerid hide-narrow"],
    ["Status", "col-state"],
  ]);
  const trackers = el("ul", { id: "trackers", class: "plain-list" });
  const me = facts([
    ["peer", "Peer id"],
    ["addresses", "Addresses"],
  ]);
  view.append(
    section("Network", info.node),
    section("Peers", el("div", { class: "table-wrap" }, peers.node)),
    section("Trackers", trackers),
    section("This node", me.node),
  );
  fillRows(peers, [], "loading…");

  const onStatus = (s) => {
    if (s.syncing) {
      const max = Math.max(s.best_known_height, s.height, 1);
      info.set(
        "sync",
        el("progress", { value: s.height, max }),
        `syncing: ${s.height} / ${s.best_known_height}`,
      );
    } else {
      info.set("sync", `caught up at height ${s.height}`);
    }
    info.set("reachability", s.reachability);
    info.set("rate", hashRate(s.hash_rate));
    info.set("difficulty", Number(s.difficulty).toLocaleString("en-US", { maximumFractionDigits: 2 }));
    info.set("mempool", `${s.mempool} pending, ${s.outbox} waiting to be delivered`);
    const items = (s.trackers || []).map((t) =>
      el(
        "li",
        {},
        el("span", { class: "mono", title: t.peer_id }, shortPeerId(t.peer_id)),
        " ",
        el("span", { class: t.connected ? "ok" : "muted" }, t.connected ? "connected" : "not connected"),
      ),
    );
    if (items.length) fill(trackers, items);
    else fill(trackers, el("li", {}, muted("no trackers")));
  };

  const refreshPeers = freshest(
    () => api("/api/peers"),
    (list) => {
      const rows = list.map((p) =>
        row(peers, { "data-name": p.name }, [
          p.name,
          el("span", { class: "mono", title: p.key }, safe(p.key).slice(0, 12)),
          el("span", { class: "mono", title: p.peer_id }, shortPeerId(p.peer_id)),
          el("span", { class: p.connected ? "ok" : "muted" }, peerState(p)),
        ]),
      );
      fillRows(peers, rows, "no peers known yet");
    },
    failRows(peers),
  );
  const refreshMe = freshest(
    () => api("/api/whoami"),
    (w) => {
      me.set("peer", el("span", { class: "mono full" }, w.peer_id));
      me.set(
        "addresses",
        w.addresses.length
          ? el(
              "ul",
              { class: "plain-list" },
              w.addresses.map((a) => el("li", { class: "mono full" }, a)),
            )
          : muted("none yet"),
      );
    },
    (error) => me.set("peer", errorLine(error.message)),
  );

  if (state.status) onStatus(state.status);
  return {
    onStatus,
    refresh() {
      refreshPeers();
      refreshMe();
    },
  };
}

// ---------------------------------------------------------------------------
// Wallet

function renderWallet(view) {
  const me = facts([
    ["name", "Name", "wallet-name"],
    ["key", "Key", "wallet-key"],
    ["balance", "Balance", "balance"],
  ]);
  const to = el("select", { id: "send-to", name: "to" });
  // Amounts are text, not type="number": they are decimal strings the node parses, and
  // a number input would reformat or reject them by the browser's own rules.
  const amountInput = el("input", {
    id: "send-amount",
    name: "amount",
    inputmode: "decimal",
    autocomplete: "off",
    placeholder: "e.g. 2.5",
  });
  const message = el("input", {
    id: "send-message",
    name: "message",
    autocomplete: "off",
    placeholder: "optional",
  });
  const fee = el("input", {
    id: "send-fee",
    name: "fee",
    inputmode: "decimal",
    autocomplete: "off",
    placeholder: "default",
  });
  const button = el("button", { id: "send-button", type: "submit" }, "Send");
  const result = el("p", { id: "send-result", class: "result", "aria-live": "polite" });
  const form = el(
    "form",
    { id: "send-form", class: "form", autocomplete: "off" },
    el("label", {}, el("span", {}, "To"), to),
    el("label", {}, el("span", {}, "Amount"), amountInput),
    el("label", {}, el("span", {}, "Message"), message),
    el("label", {}, el("span", {}, "Fee"), fee),
    el("div", { class: "form-actions" }, button),
    result,
  );
  const inbox = table(
    "inbox",
    [
      ["From", "col-name"],
      ["Amount", "col-amount"],
      ["Message", "col-message"],
      ["Status", "col-state"],
      ["Received", "col-age"],
    ],
    { stack: true },
  );
  view.append(
    el("div", { class: "two-cards" }, section("You", me.node), section("Send", form)),
    section("Inbox", el("div", { class: "table-wrap" }, inbox.node)),
  );
  fillRows(inbox, [], "loading…");

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });

  async function send() {
    const recipient = to.value;
    const body = { to: recipient, amount: amountInput.value.trim(), message: message.value };
    if (fee.value.trim()) body.fee = fee.value.trim();
    button.disabled = true;
    result.className = "result muted";
    fill(result, "sending…");
    try {
      const answer = await api("/api/send", body);
      result.className = "result ok";
      fill(
        result,
        answer.status === "broadcast"
          ? `${safe(recipient)} is offline: broadcast to the network (tx `
          : `${safe(recipient)} accepted it (tx `,
        link(txHref(answer.txid), short(answer.txid)),
        ")",
      );
      amountInput.value = "";
      message.value = "";
      scheduleRefresh();
    } catch (error) {
      result.className = "result error";
      fill(result, error.message);
    } finally {
      button.disabled = false;
    }
  }

  // Rebuilding the options would close an open dropdown and lose the choice, so it is
  // only done when the list changed, and the chosen name is kept.
  let peersKey = null;
  const showPeers = (list) => {
    const byName = (a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
    const sorted = list
      .slice()
      .sort((a, b) => Number(b.connected) - Number(a.connected) || byName(a, b));
    const key = JSON.stringify(sorted.map((p) => [p.name, p.connected]));
    if (key === peersKey) return;
    peersKey = key;
    const chosen = to.value;
    const options = sorted.map((p) =>
      el("option", { value: p.name }, p.connected ? p.name : `${safe(p.name)} (offline)`),
    );
    if (options.length) fill(to, options);
    else fill(to, el("option", { value: "", disabled: true }, "no peers known yet"));
    if (sorted.some((p) => p.name === chosen)) to.value = chosen;
  };

  const refreshMe = freshest(
    () => api("/api/whoami"),
    (w) => {
      me.set("name", el("strong", {}, w.name));
      me.set("key", el("span", { class: "mono full" }, w.key));
      me.set("balance", `${amount(w.confirmed)} confirmed, ${amount(w.pending)} with pending`);
    },
    (error) => me.set("balance", errorLine(error.message)),
  );
  const refreshPeers = freshest(() => api("/api/peers"), showPeers, (error) => {
    if (!to.options.length) fill(to, el("option", { value: "", disabled: true }, error.message));
  });
  const refreshInbox = freshest(
    () => api("/api/inbox"),
    (list) => {
      const rows = list
        .slice()
        .sort((a, b) => b.received - a.received)
        .map((item) =>
          row(inbox, { "data-txid": item.txid }, [
            item.from,
            amount(item.amount),
            messageNode(item.message),
            item.height === null || item.height === undefined
              ? el("span", { class: "warn" }, "pending")
              : ["in block ", blockLink(item.height)],
            ageNode(item.received),
          ]),
        );
      fillRows(inbox, rows, "nothing received yet");
    },
    failRows(inbox),
  );

  return {
    refresh() {
      refreshMe();
      refreshPeers();
      refreshInbox();
    },
  };
}

// ---------------------------------------------------------------------------
// Mining

/** Updates the mining view's live numbers, if it is shown. */
function showMiningFacts() {
  setText("hash-rate", hashRate(state.hashRate));
  setText("network-hash-rate", hashRate(state.status ? state.status.hash_rate : 0));
  const status = document.getElementById("mining-status");
  if (!status) return;
  const mining = state.mining.inFlight || (state.status && state.status.mining);
  status.className = mining ? "ok" : "muted";
  status.textContent = mining
    ? state.miningHeight !== null
      ? `mining block ${state.miningHeight}`
      : "mining"
    : "idle";
}

/** Shows the last mining answer (kept in `state` so it survives leaving the view). */
function showMineResult() {
  const result = document.getElementById("mine-result");
  if (!result) return;
  const m = state.mining;
  result.className = m.error ? "result error" : "result";
  fill(result, m.inFlight ? "mining…" : m.result || "");
  fill("mine-details", m.details || "");
  const button = document.getElementById("mine-button");
  if (button) button.disabled = m.inFlight;
}

async function mine(blocks) {
  const m = state.mining;
  Object.assign(m, { inFlight: true, result: null, details: null, error: false });
  showMineResult();
  showMiningFacts();
  try {
    const answer = await api("/api/mine", { blocks });
    m.result = `mined ${answer.mined.length} block(s), lost ${answer.lost.length}`;
    m.details = [
      ...answer.mined.map((b) =>
        el("li", {}, "block ", blockLink(b.height), " ", hashLink(blockHref(b.hash), b.hash)),
      ),
      ...answer.lost.map((b) =>
        el("li", {}, "block ", blockLink(b.height), ` won by ${safe(b.winner)}`),
      ),
    ];
  } catch (error) {
    m.result = error.message;
    m.error = true;
  } finally {
    m.inFlight = false;
    showMineResult();
    showMiningFacts();
    scheduleRefresh();
  }
}

function renderMining(view) {
  const info = facts([
    ["status", "Status", "mining-status"],
    ["rate", "Hash rate", "hash-rate"],
    ["height", "Chain height", "mining-height"],
  ]);
  const count = el("input", {
    id: "mine-blocks",
    type: "number",
    min: 1,
    step: 1,
    value: 1,
    inputmode: "numeric",
  });
  const mineButton = el("button", { id: "mine-button", type: "submit" }, "Mine");
  const stopButton = el("button", { id: "stop-button", type: "button", class: "secondary" }, "Stop");
  const form = el(
    "form",
    { id: "mine-form", class: "form inline" },
    el("label", {}, el("span", {}, "Blocks"), count),
    el("div", { class: "form-actions" }, mineButton, stopButton),
  );
  const stopResult = el("p", { id: "stop-result", class: "result muted" });
  view.append(
    section(
      "Mining",
      info.node,
      form,
      el("p", { id: "mine-result", class: "result", "aria-live": "polite" }),
      el("ul", { id: "mine-details", class: "plain-list" }),
      stopResult,
    ),
  );

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (state.mining.inFlight) return;
    const blocks = Number(count.value);
    if (!Number.isInteger(blocks) || blocks < 1) {
      Object.assign(state.mining, {
        result: "Enter a whole number of blocks, 1 or more.",
        details: null,
        error: true,
      });
      showMineResult();
      return;
    }
    fill(stopResult, "");
    mine(blocks);
  });
  stopButton.addEventListener("click", async () => {
    stopButton.disabled = true;
    try {
      const answer = await api("/api/mine/stop", {});
      fill(stopResult, answer.stopped ? "stopped the miner" : "the miner was not running");
      stopResult.className = "result muted";
    } catch (error) {
      fill(stopResult, error.message);
      stopResult.className = "result error";
    } finally {
      stopButton.disabled = false;
      scheduleRefresh();
    }
  });

  const onStatus = (s) => {
    info.set("height", String(s.height));
    showMiningFacts();
  };
  showMineResult();
  showMiningFacts();
  if (state.status) onStatus(state.status);
  // Everything here comes from the status and the notices, refreshed by the caller.
  return { onStatus, refresh() {} };
}

// ---------------------------------------------------------------------------
// Search

function showSearchResult(...content) {
  const node = document.getElementById("search-result");
  node.className = "search-result";
  fill(node, ...content);
  node.hidden = content.length === 0;
  return node;
}

function searchError(message) {
  showSearchResult(message).classList.add("error");
}

/** A height, a block hash or txid, or else a peer name whose balance is shown. */
async function search(query) {
  showSearchResult(); // the answer to an earlier search no longer applies
  if (!query) return;
  if (/^\d+$/.test(query)) return go(blockHref(query));
  if (HEX64.test(query)) return searchHash(query.toLowerCase());
  showSearchResult(muted("looking up…"));
  try {
    const { name, confirmed, pending } = await api(`/api/balance/${encodeURIComponent(query)}`);
    showSearchResult(
      `${safe(name)}: ${amount(confirmed)} confirmed, ${amount(pending)} with pending`,
    );
  } catch (error) {
    searchError(error.message);
  }
}

/** 64 hex digits name a block or a transaction: try the block first. */
async function searchHash(hex) {
  showSearchResult(muted("looking up…"));
  for (const [path, href] of [
    [`/api/block/${hex}`, blockHref(hex)],
    [`/api/tx/${hex}`, txHref(hex)],
  ]) {
    try {
      await api(path);
      return go(href);
    } catch (error) {
      if (error.status !== 404) return searchError(error.message);
    }
  }
  searchError(`not found: no block or transaction ${hex}`);
}

// ---------------------------------------------------------------------------
// Routing

function decodePart(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** The section (for the nav) and the view function for a location hash. */
function route(hash) {
  const path = hash.replace(/^#/, "") || "/";
  let match;
  if (path === "/") return ["explorer", renderExplorer];
  if (path === "/network") return ["network", renderNetwork];
  if (path === "/wallet") return ["wallet", renderWallet];
  if (path === "/mining") return ["mining", renderMining];
  if ((match = path.match(/^\/block\/(.+)$/))) {
    const id = decodePart(match[1]);
    return ["explorer", (view) => renderBlock(view, id)];
  }
  if ((match = path.match(/^\/tx\/(.+)$/))) {
    const txid = decodePart(match[1]);
    return ["explorer", (view) => renderTx(view, txid)];
  }
  return [null, renderNotFound];
}

function renderNotFound(view) {
  view.append(
    section(
      "Not found",
      el("p", {}, "There is no such page. ", link("#/", "Go to the explorer"), "."),
    ),
  );
  return { refresh() {} };
}

/** Goes to `hash`, rendering again if it is already the current one. */
function go(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

function showNoToken() {
  state.view = null;
  fill(
    "view",
    el("section", { class: "card" }, el("p", { id: "auth-message", class: "error" }, NO_TOKEN_MESSAGE)),
  );
}

function render() {
  if (!getToken()) return showNoToken();
  const [sectionName, renderView] = route(location.hash);
  for (const a of document.querySelectorAll(".nav-links a")) {
    a.classList.toggle("active", a.dataset.section === sectionName);
  }
  const view = document.getElementById("view");
  view.replaceChildren();
  state.view = renderView(view);
  state.view.refresh();
  window.scrollTo(0, 0);
}

// ---------------------------------------------------------------------------
// Start

function start() {
  adoptTokenFromUrl();
  window.addEventListener("hashchange", () => {
    // A new "#token=" link pasted into this tab replaces the token.
    if (adoptTokenFromUrl()) refreshStatus();
    showSearchResult();
    render();
  });
  document.getElementById("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    search(document.getElementById("search").value.trim());
  });

  render();
  if (getToken()) refreshStatus();
  followEvents();

  setInterval(() => {
    if (!getToken()) return;
    if (state.live) refreshStatus();
    else scheduleRefresh(); // no events arrive: keep the view current by polling
  }, STATUS_POLL_MS);

  // Ages ("12s ago") keep counting without asking the node anything.
  setInterval(() => {
    for (const node of document.querySelectorAll(".age[data-time]")) {
      node.textContent = age(Number(node.dataset.time));
    }
  }, 1000);
}

start();
