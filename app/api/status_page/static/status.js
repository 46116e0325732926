// The status page: the fleet by state, the furthest behind, recent failures, one mailbox's health.
//
// Without a key it shows the prompt alone and asks the API nothing. The key lives in this
// tab's sessionStorage only (never localStorage, never a cookie) and goes out as the bearer
// token of the two health routes; a key the API refuses is forgotten at once. Everything the
// API answers is written with textContent: no answer can add markup to the page.

const STORAGE_KEY = "imap-bridge-status-key";
const REFRESH_MS = 10000;
const byId = (id) => document.getElementById(id);
let refreshTimer = null;
let shownMailbox = null;

class KeyRefused extends Error {}

function storedKey() {
  return sessionStorage.getItem(STORAGE_KEY);
}

async function fetchHealth(path) {
  const response = await fetch(path, {
    headers: { Authorization: `Bearer ${storedKey()}` },
    cache: "no-store",
    credentials: "omit",
  });
  if (response.status === 401 || response.status === 403) {
    throw new KeyRefused();
  }
  if (!response.ok) {
    const problem = await response.json().catch(() => ({}));
    throw new Error(problem.detail || `the service answered ${response.status}`);
  }
  return response.json();
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function stateBadge(state) {
  return element("span", state.replace("_", " "), `state state-${state}`);
}

function duration(seconds) {
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)} min`;
  if (seconds < 172800) return `${Math.floor(seconds / 3600)} h`;
  return `${Math.floor(seconds / 86400)} d`;
}

function moment(iso) {
  return iso ? new Date(iso).toLocaleString() : "never";
}

function mailboxLink(id, label) {
  const button = element("button", label, "link");
  button.type = "button";
  button.dataset.mailboxId = String(id);
  button.addEventListener("click", () => showMailbox(id));
  return button;
}

function fillRows(table, rows) {
  const body = table.tBodies[0];
  body.replaceChildren(
    ...rows.map((cells) => {
      const row = document.createElement("tr");
      for (const cell of cells) {
        const td = document.createElement("td");
        td.append(cell instanceof Node ? cell : document.createTextNode(String(cell)));
        row.append(td);
      }
      return row;
    }),
  );
}

function renderFleet(fleet) {
  byId("counts").replaceChildren(
    ...Object.entries(fleet.counts).map(([state, count]) => {
      const item = element("li");
      item.dataset.state = state;
      item.append(stateBadge(state), document.createTextNode(` ${count}`));
      return item;
    }),
  );
  byId("queue").textContent =
    fleet.queue_depth === null
      ? "Queue: unknown (Redis does not answer)"
      : `Queue: ${fleet.queue_depth} jobs waiting`;
  fillRows(
    byId("lags"),
    fleet.worst_lags.map((m) => [
      mailboxLink(m.mailbox_id, m.email_address),
      stateBadge(m.state),
      duration(m.lag_seconds),
      moment(m.last_success_at),
    ]),
  );
  fillRows(
    byId("failures"),
    fleet.recent_failures.map((f) => [
      moment(f.finished_at),
      mailboxLink(f.mailbox_id, f.email_address),
      `${f.error_code}: ${f.error}`,
    ]),
  );
  byId("updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
}

function renderMailbox(health) {
  const box = byId("mailbox");
  const facts = element("dl");
  const add = (term, value) => facts.append(element("dt", term), element("dd", value));
  add("Since", moment(health.since));
  add("Next attempt", moment(health.next_attempt_at));
  add("Last success", moment(health.last_success_at));
  add("Lag", duration(health.lag_seconds));
  add("Watch", health.watch.state);
  const backfill = health.backfill;
  if (!backfill.complete) {
    const folders = backfill.folders
      .map((f) => `${f.full_name} ${f.stored}/${f.estimated_total ?? "?"}`)
      .join(", ");
    add("First sync", folders || "not started");
  }
  const heading = element("h3", `Mailbox ${health.mailbox_id} `);
  heading.append(stateBadge(health.state));
  const blockers = element("ul");
  blockers.id = "blockers";
  for (const blocker of health.blockers) {
    const since = blocker.since ? ` (since ${moment(blocker.since)})` : "";
    const item = element("li", `${blocker.code}: ${blocker.detail}${since}`);
    item.dataset.code = blocker.code;
    blockers.append(item);
  }
  box.replaceChildren(heading, element("p", health.summary, "summary"), facts, blockers);
}

async function showMailbox(id) {
  shownMailbox = id;
  byId("mailbox-id").value = String(id);
  try {
    renderMailbox(await fetchHealth(`v1/mailboxes/${encodeURIComponent(id)}/health`));
  } catch (error) {
    handle(error, (message) => byId("mailbox").replaceChildren(element("p", message)));
  }
}

async function refresh() {
  try {
    renderFleet(await fetchHealth("v1/health/mailboxes"));
    if (shownMailbox !== null) await showMailbox(shownMailbox);
  } catch (error) {
    handle(error, (message) => (byId("updated").textContent = `Not updated: ${message}`));
  }
}

function handle(error, say) {
  if (error instanceof KeyRefused) {
    forget("The service refused this key. Paste a status key.");
  } else {
    say(error.message);
  }
}

function showStatus() {
  byId("prompt").hidden = true;
  byId("status").hidden = false;
  byId("forget").hidden = false;
  refresh();
  clearInterval(refreshTimer);
  refreshTimer = setInterval(refresh, REFRESH_MS);
}

function forget(message) {
  sessionStorage.removeItem(STORAGE_KEY);
  clearInterval(refreshTimer);
  shownMailbox = null;
  for (const id of ["counts", "mailbox"]) byId(id).replaceChildren();
  for (const id of ["lags", "failures"]) byId(id).tBodies[0].replaceChildren();
  byId("status").hidden = true;
  byId("forget").hidden = true;
  byId("prompt").hidden = false;
  byId("prompt-error").textContent = message || "";
  byId("key").value = "";
  byId("key").focus();
}

byId("prompt").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = byId("key").value.trim();
  if (!key) return;
  sessionStorage.setItem(STORAGE_KEY, key);
  byId("key").value = "";
  byId("prompt-error").textContent = "";
  showStatus();
});
byId("lookup").addEventListener("submit", (event) => {
  event.preventDefault();
  showMailbox(Number(byId("mailbox-id").value));
});
byId("forget").addEventListener("click", () => forget(""));

if (storedKey()) {
  showStatus();
} else {
  forget("");
}
