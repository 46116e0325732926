// imap-bridge OAuth popup helper: a dependency-free ES module.
//
//   import { connectMailbox } from "https://bridge.example.com/static/imap-bridge-oauth.js";
//   button.onclick = async () => {
//     const mailbox = await connectMailbox({
//       provider: "gmail",
//       apiBase: "/crm/imap-bridge/v1",       // the CRM backend, which adds its API key
//     });
//     // mailbox: the registered mailbox (MailboxRead) from
//     // POST {apiBase}/oauth/{provider}/complete; no token ever reaches the page
//   };
//
// By default the result goes to POST {apiBase}/oauth/{provider}/complete as {code, state}
// (plus `sync_start` when given): the CRM backend adds `owner` from its own session (never
// from the page) and forwards it with its API key; the service exchanges the code, checks the
// login and creates the mailbox. A CRM that keeps tokens itself passes `exchange(code, state)`
// instead (normally its backend calling POST /v1/oauth/{provider}/token), and the promise
// resolves with whatever `exchange` resolved with.
//
// The popup opens synchronously inside the click (so blockers let it through), then
// goes to the authorization URL that `authorize` (default: POST {apiBase}/oauth/
// {provider}/authorize) returns. Only a message from that popup, from the origin of the
// flow's redirect URI, carrying the flow's state, is accepted. Errors reject with an
// Error whose `code` is the reason: access_denied, state_expired, state_used,
// invalid_state, popup_blocked, popup_closed, timeout, complete_failed (with `problem`,
// the service's problem+json: mailbox_exists, auth_failed...)...

const MESSAGE_TYPE = "imap-bridge-oauth";

async function defaultAuthorize(apiBase, provider, origin, loginHint) {
  const response = await fetch(`${apiBase}/oauth/${encodeURIComponent(provider)}/authorize`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    credentials: "include",
    body: JSON.stringify({ origin, login_hint: loginHint ?? null }),
  });
  if (!response.ok) {
    throw failure("authorize_failed", `authorize answered HTTP ${response.status}`);
  }
  return response.json();
}

async function defaultComplete(apiBase, provider, code, state, syncStart) {
  const body = { code, state };
  if (syncStart) body.sync_start = syncStart;
  const response = await fetch(`${apiBase}/oauth/${encodeURIComponent(provider)}/complete`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    credentials: "include",
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => null);
  if (!response.ok) {
    const error = failure("complete_failed", `complete answered HTTP ${response.status}`);
    error.problem = answer;
    throw error;
  }
  return answer;
}

function failure(code, message) {
  const error = new Error(message || code);
  error.code = code;
  return error;
}

export function connectMailbox({
  provider,
  apiBase = "",
  origin = window.location.origin,
  exchange,
  authorize,
  loginHint,
  syncStart,
  timeoutMs = 5 * 60 * 1000,
  popupFeatures = "popup,width=520,height=680",
}) {
  if (exchange !== undefined && typeof exchange !== "function") {
    return Promise.reject(failure("bad_arguments", "exchange must be a function(code, state)"));
  }
  const finishFlow = exchange
    ? exchange
    : (code, state) => defaultComplete(apiBase, provider, code, state, syncStart);
  const popup = window.open("about:blank", "imap-bridge-oauth", popupFeatures);
  if (!popup) {
    return Promise.reject(failure("popup_blocked", "the browser blocked the popup"));
  }
  return new Promise((resolve, reject) => {
    let expected = null; // {origin, state} once the flow has started
    let settled = false;
    let answered = false; // the popup's message arrived: its closing is expected now
    const timer = setTimeout(() => finish(failure("timeout", "no answer from the popup")), timeoutMs);
    // The callback page posts, then closes itself; a message can arrive just after the
    // close is seen, so a closed popup counts only once a short grace period passed.
    const watcher = setInterval(() => {
      if (!popup.closed || answered) return;
      clearInterval(watcher);
      setTimeout(() => {
        if (!answered) finish(failure("popup_closed", "the popup was closed"));
      }, 500);
    }, 250);

    function finish(error, value) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearInterval(watcher);
      window.removeEventListener("message", onMessage);
      if (error) {
        if (!popup.closed) popup.close();
        reject(error);
      } else {
        resolve(value);
      }
    }

    function onMessage(event) {
      const data = event.data;
      if (!expected || event.source !== popup || event.origin !== expected.origin) return;
      if (!data || data.type !== MESSAGE_TYPE || data.state !== expected.state) return;
      answered = true;
      if (data.error) {
        finish(failure(data.error, data.error_description || data.error));
        return;
      }
      Promise.resolve()
        .then(() => finishFlow(data.code, data.state))
        .then((value) => finish(null, value), (error) => finish(error));
    }

    window.addEventListener("message", onMessage);
    const start = authorize
      ? authorize(provider, origin, loginHint)
      : defaultAuthorize(apiBase, provider, origin, loginHint);
    Promise.resolve(start)
      .then(({ authorization_url: url, state }) => {
        const redirect = new URL(url).searchParams.get("redirect_uri");
        if (!redirect || !state) throw failure("authorize_failed", "no redirect_uri or state");
        expected = { origin: new URL(redirect).origin, state };
        popup.location.href = url;
      })
      .catch((error) => finish(error.code ? error : failure("authorize_failed", String(error))));
  });
}
