// The kiosk page: Dify's streaming chat API of the box, a "call a staff member" button that records a
// hand-off, an offline-from-central indicator and an idle reset. Plain JS, no build, no other host.
// Auth is the HttpOnly session cookie `GET /` set: this script never sees a key. Model output is only
// ever written with textContent, never parsed as HTML.
"use strict";

(() => {
  const STRINGS = window.KIOSK_STRINGS;
  const $ = (id) => document.getElementById(id);
  const el = {
    title: $("title"),
    central: $("central"),
    restart: $("restart"),
    language: $("language"),
    main: $("main"),
    welcome: $("welcome"),
    opening: $("opening"),
    suggestions: $("suggestions"),
    messages: $("messages"),
    notice: $("notice"),
    ask: $("ask"),
    question: $("question"),
    send: $("send"),
    staff: $("staff"),
  };
  const JSON_HEADERS = { "Content-Type": "application/json" };
  // The box pins the Dify user to this page's own session; what is sent here is ignored.
  const USER = "kiosk";
  // `?kiosk=<id>` in the page's address names this kiosk to staff when one box serves several.
  const KIOSK_ID = (new URLSearchParams(window.location.search).get("kiosk") || "").trim().slice(0, 64);
  const HANDOFF_POLL_S = 2;
  const config = { idleResetS: 90, handoffWaitS: 300, language: "en", pollS: 15 };
  const state = {
    lang: "en",
    conversationId: null,
    busy: null, // {controller, taskId, handoff} while an answer streams
    lastActivity: Date.now(),
    central: "unknown",
    reachable: true,
    parameters: false,
    parametersLang: null,
    renewing: null,
    resets: 0,
    handoffWatch: null, // {timer, item} while a hand-off is followed until a colleague claims it
  };

  const t = (key) => STRINGS[state.lang][key];

  // --- language -------------------------------------------------------------------------------

  function applyLanguage(lang) {
    state.lang = STRINGS[lang] ? lang : "en";
    document.documentElement.lang = t("htmlLang");
    document.title = t("title");
    el.title.textContent = t("title");
    for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
    for (const node of document.querySelectorAll("[data-i18n-placeholder]")) {
      node.placeholder = t(node.dataset.i18nPlaceholder);
    }
    for (const node of document.querySelectorAll("[data-i18n-label]")) {
      node.setAttribute("aria-label", t(node.dataset.i18nLabel));
    }
    for (const node of document.querySelectorAll("[data-i18n-turn]")) node.textContent = t(node.dataset.i18nTurn);
    el.language.textContent = t("switchLabel");
    el.language.lang = t("switchLang");
    renderCentral();
    // The opening statement and suggested questions follow the page's language.
    if (state.parameters && state.parametersLang !== state.lang) loadParameters();
  }

  // --- talking to the box -----------------------------------------------------------------------

  function renewSession() {
    state.renewing = fetch("/kiosk/session", { method: "POST", cache: "no-store" })
      .catch(() => null)
      .finally(() => {
        state.renewing = null;
      });
    return state.renewing;
  }

  // `request()` builds the fetch options afresh for each attempt; a 401 (session expired, or the
  // secret rotated) gets a new session and one retry.
  async function call(path, request) {
    if (state.renewing) await state.renewing;
    let response = await fetch(path, { cache: "no-store", ...request() });
    if (response.status === 401) {
      await renewSession();
      state.conversationId = null; // it belonged to the old session's user
      response = await fetch(path, { cache: "no-store", ...request() });
    }
    return response;
  }

  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = block
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (data) onEvent(JSON.parse(data)); // `event: ping` keep-alives carry no data
      }
    }
  }

  // --- the conversation on screen ---------------------------------------------------------------

  function setConversation(id) {
    state.conversationId = id;
    if (id) el.messages.dataset.conversationId = id;
    else delete el.messages.dataset.conversationId;
  }

  function turn(kind, who) {
    const item = document.createElement("li");
    item.className = `turn ${kind}`;
    const label = document.createElement("span");
    label.className = "visually-hidden";
    label.dataset.i18nTurn = who;
    label.textContent = t(who);
    const text = document.createElement("p");
    text.className = "text";
    item.append(label, text);
    el.messages.append(item);
    return { item, text };
  }

  function scrollToEnd() {
    el.main.scrollTop = el.main.scrollHeight;
  }

  function addQuestion(query) {
    el.welcome.hidden = true;
    turn("user", "you").text.textContent = query;
  }

  function addAnswer() {
    const answer = turn("answer", "assistant");
    answer.item.setAttribute("aria-busy", "true");
    answer.item.dataset.state = "waiting";
    answer.text.classList.add("thinking");
    answer.text.textContent = t("thinking");
    scrollToEnd();
    return answer;
  }

  function appendText(answer, chunk) {
    if (answer.item.dataset.state === "waiting") {
      answer.item.dataset.state = "streaming";
      answer.text.classList.remove("thinking");
      answer.text.textContent = "";
    }
    answer.text.textContent += chunk;
    scrollToEnd();
  }

  function fail(answer, message) {
    answer.item.dataset.state = "error";
    answer.text.classList.remove("thinking");
    answer.text.textContent = message;
  }

  function finish(answer, route) {
    if (answer.item.dataset.state !== "error") answer.item.dataset.state = "done";
    if (route) answer.item.dataset.route = route;
    answer.item.removeAttribute("aria-busy");
    scrollToEnd();
  }

  // A staff call shows the box's confirmation, not the generic hand-off answer it streams back.
  function addStaffCall() {
    const call = turn("system", "assistant");
    call.item.setAttribute("aria-busy", "true");
    call.item.dataset.state = "waiting";
    call.text.textContent = t("calling");
    scrollToEnd();
    return call;
  }

  function errorText(response) {
    if (response.status === 429 || response.status === 503) return t("busy");
    if (response.status === 404) setConversation(null); // gone: the next question starts a new one
    return t("error");
  }

  function setBusy(busy) {
    el.send.disabled = busy;
    for (const chip of el.suggestions.querySelectorAll("button")) chip.disabled = busy;
  }

  function cancelAnswer() {
    const busy = state.busy;
    if (!busy) return;
    state.busy = null;
    setBusy(false);
    busy.controller.abort();
    if (busy.taskId) {
      fetch(`/v1/chat-messages/${encodeURIComponent(busy.taskId)}/stop`, {
        method: "POST",
        headers: JSON_HEADERS,
        body: JSON.stringify({ user: USER }),
      }).catch(() => {});
    }
  }

  async function ask(text, { handoff = false } = {}) {
    const query = text.trim();
    if (!query) return;
    if (state.busy) {
      if (!handoff || state.busy.handoff) return; // a staff call goes ahead of an answer, once
      cancelAnswer();
    }
    const resets = state.resets;
    activity();
    addQuestion(query);
    const answer = handoff ? addStaffCall() : addAnswer();
    const controller = new AbortController();
    state.busy = { controller, taskId: null, handoff };
    setBusy(true);
    let route = null;
    try {
      const response = await call("/v1/chat-messages", () => ({
        method: "POST",
        headers: JSON_HEADERS,
        signal: controller.signal,
        body: JSON.stringify({
          query,
          inputs: { ...(handoff ? { handoff: true } : {}), ...(KIOSK_ID ? { kiosk_id: KIOSK_ID } : {}) },
          response_mode: "streaming",
          user: USER,
          ...(state.conversationId ? { conversation_id: state.conversationId } : {}),
        }),
      }));
      if (!response.ok) {
        fail(answer, errorText(response));
        return;
      }
      await readEvents(response, (event) => {
        if (state.resets !== resets) return;
        if (event.conversation_id && !state.conversationId) setConversation(event.conversation_id);
        if (event.event === "message") {
          if (state.busy && state.busy.controller === controller) state.busy.taskId = event.task_id;
          if (!handoff) appendText(answer, event.answer || "");
          activity();
        } else if (event.event === "message_end") {
          route = event.metadata ? event.metadata.route : null;
        } else if (event.event === "error") {
          fail(answer, event.status === 429 || event.status === 503 ? t("busy") : t("error"));
        }
      });
    } catch (error) {
      if (error.name !== "AbortError") fail(answer, t("error"));
    } finally {
      if (handoff && route === "handoff") answer.text.textContent = t("staffCalled");
      else if (answer.item.dataset.state === "waiting" && controller.signal.aborted) answer.item.remove();
      else if (answer.item.dataset.state === "waiting" && (handoff || route === null)) fail(answer, t("error"));
      else if (answer.item.dataset.state === "waiting") appendText(answer, ""); // an empty answer
      finish(answer, route);
      if (route === "handoff" && state.resets === resets) watchHandoff(answer.item);
      if (state.busy && state.busy.controller === controller) {
        state.busy = null;
        setBusy(false);
      }
      if (state.resets === resets) activity();
    }
  }

  // --- a colleague on the way: follow the hand-off until staff claim it ---------------------------

  function stopHandoffWatch() {
    if (state.handoffWatch) clearInterval(state.handoffWatch.timer);
    state.handoffWatch = null;
  }

  // The newest hand-off turn carries the status line; asking again (a second press) moves it there.
  function watchHandoff(item) {
    const claimed = el.messages.querySelector(".handoff-status");
    stopHandoffWatch();
    const watch = { item, timer: null };
    if (claimed) item.append(claimed);
    watch.timer = setInterval(() => checkHandoff(watch), HANDOFF_POLL_S * 1000);
    state.handoffWatch = watch;
    checkHandoff(watch);
  }

  async function checkHandoff(watch) {
    let seen = null;
    try {
      const response = await fetch("/kiosk/handoff", { cache: "no-store" });
      if (response.status === 401) seen = { status: "none" }; // the session was renewed: not ours any more
      else if (response.ok) seen = await response.json();
    } catch (error) {
      return; // the box is unreachable for now: the next tick asks again
    }
    if (!seen || state.handoffWatch !== watch) return;
    if (seen.status === "claimed" && !watch.item.querySelector(".handoff-status")) {
      const line = document.createElement("p");
      line.className = "handoff-status";
      line.dataset.i18nTurn = "colleagueComing";
      line.textContent = t("colleagueComing");
      watch.item.append(line);
      scrollToEnd();
    }
    if (seen.status === "closed" || seen.status === "abandoned" || seen.status === "none") stopHandoffWatch();
  }

  // --- welcome: the app's opening statement and suggested questions -------------------------------

  async function loadParameters() {
    const lang = state.lang;
    try {
      const path = `/v1/parameters?language=${encodeURIComponent(lang)}`;
      const response = await call(path, () => ({ headers: JSON_HEADERS }));
      if (!response.ok || lang !== state.lang) return;
      const parameters = await response.json();
      state.parametersLang = lang;
      el.opening.textContent = parameters.opening_statement || "";
      const chips = (parameters.suggested_questions || []).map((question) => {
        const item = document.createElement("li");
        const button = document.createElement("button");
        button.type = "button";
        button.className = "chip";
        button.textContent = question;
        button.addEventListener("click", () => ask(question));
        item.append(button);
        return item;
      });
      el.suggestions.replaceChildren(...chips);
      state.parameters = true;
      document.body.dataset.ready = "true";
    } catch (error) {
      // the box is starting or unreachable: the next status poll tries again
    }
  }

  // --- central connectivity --------------------------------------------------------------------

  function renderCentral() {
    // Unknown (no sync agent, or it stopped reporting) shows nothing: a shopper cannot act on it.
    const text = !state.reachable ? t("unreachable") : state.central === "offline" ? t("offline") : "";
    el.central.textContent = text;
    el.central.hidden = !text;
    el.central.dataset.central = state.reachable ? state.central : "unreachable";
  }

  async function pollStatus() {
    let status = null;
    try {
      const response = await fetch("/kiosk/status", { cache: "no-store" });
      if (response.ok) status = await response.json();
    } catch (error) {
      status = null;
    }
    state.reachable = status !== null;
    if (status) state.central = status.central;
    renderCentral();
    if (status && !state.parameters) loadParameters();
    return status;
  }

  // --- idle reset ----------------------------------------------------------------------------

  function activity() {
    state.lastActivity = Date.now();
    hideIdleNotice();
  }

  function hideIdleNotice() {
    el.notice.hidden = true;
    el.notice.textContent = "";
  }

  function inUse() {
    return el.messages.childElementCount > 0 || el.question.value !== "" || state.lang !== config.language;
  }

  function checkIdle() {
    if (!inUse() || state.busy) {
      hideIdleNotice();
      return;
    }
    // A shopper waiting for a colleague stands still: the longer wait keeps their call on the board.
    const limit = state.handoffWatch ? Math.max(config.idleResetS, config.handoffWaitS) : config.idleResetS;
    const left = limit - (Date.now() - state.lastActivity) / 1000;
    if (left <= 0) {
      reset();
    } else if (left <= Math.min(15, limit / 3)) {
      el.notice.textContent = t("idle").replace("{n}", String(Math.ceil(left)));
      el.notice.hidden = false;
    } else {
      hideIdleNotice();
    }
  }

  // The next shopper gets an empty screen, the default language and a new session: a new Dify
  // user, who cannot read the previous conversation (it stays recorded on the box for central).
  function reset() {
    state.resets += 1;
    document.body.dataset.resets = String(state.resets);
    stopHandoffWatch();
    cancelAnswer();
    el.messages.replaceChildren();
    el.question.value = "";
    el.question.blur();
    setConversation(null);
    el.welcome.hidden = false;
    applyLanguage(config.language);
    el.main.scrollTop = 0;
    renewSession();
    activity();
  }

  // --- wiring ------------------------------------------------------------------------------------

  el.ask.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = el.question.value;
    if (!query.trim() || state.busy) return;
    el.question.value = "";
    ask(query);
  });
  el.staff.addEventListener("click", () => ask(t("staffQuery"), { handoff: true }));
  el.language.addEventListener("click", () => applyLanguage(t("switchTo")));
  el.restart.addEventListener("click", reset);
  for (const type of ["pointerdown", "keydown", "input", "wheel", "touchstart"]) {
    document.addEventListener(type, activity, { capture: true, passive: true });
  }
  el.main.addEventListener("scroll", activity, { passive: true });

  async function start() {
    applyLanguage(config.language);
    const status = await pollStatus();
    if (status) {
      config.idleResetS = Number(status.idle_reset_s) || config.idleResetS;
      config.handoffWaitS = Number(status.handoff_wait_s) || config.handoffWaitS;
      config.language = STRINGS[status.language] ? status.language : config.language;
      config.pollS = Number(status.poll_s) || config.pollS;
      applyLanguage(config.language);
    }
    setInterval(pollStatus, config.pollS * 1000);
    setInterval(checkIdle, 1000);
  }

  start();
})();
