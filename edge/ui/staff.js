// The staff page: sign in with the store's staff PIN, see open hand-offs live (server-sent events, or
// polling when those fail), claim one ("I'm coming"), close it ("Done"), and read today's history.
// Plain JS, no build, no other host. A shopper's words and the model's answers are only ever written with
// textContent, never parsed as HTML. The session is an HttpOnly cookie this script never sees.
"use strict";

(() => {
  const STRINGS = {
    en: {
      htmlLang: "en",
      switchTo: "zh",
      switchLabel: "中文",
      switchLang: "zh-Hans",
      title: "Store staff",
      signInHeading: "Sign in to see hand-offs",
      nameLabel: "Your name",
      pinLabel: "Store staff PIN",
      signIn: "Sign in",
      signOut: "Sign out",
      views: "Views",
      board: "Waiting now",
      today: "Today",
      todayHeading: "Today's hand-offs",
      refresh: "Refresh",
      empty: "Nobody is waiting. New hand-offs appear here.",
      soundOn: "Sound on",
      soundOff: "Sound off",
      live: "Live",
      polling: "Polling",
      offline: "Offline (retrying)",
      needName: "Enter your name and the PIN.",
      wrongPin: "Wrong PIN.",
      wait: "Too many wrong PINs. Try again in {n} s.",
      unreachable: "Cannot reach the box. Check the store network and try again.",
      failed: "Something went wrong. Please try again.",
      kiosk: "Kiosk",
      langEn: "EN",
      langZh: "中文",
      reason_button: "Pressed “call staff”",
      reason_abstention: "Assistant couldn't answer",
      reason_error: "Assistant error",
      waiting: "Waiting {t}",
      waited: "Waited {t}",
      overdue: "Nobody has claimed this yet!",
      claimedBy: "{name} is on the way",
      calls: "Called {n} times",
      question: "Question",
      transcript: "Conversation so far ({n})",
      shopper: "Shopper",
      assistant: "Assistant",
      coming: "I'm coming",
      done: "Done",
      comingLabel: "I'm coming to kiosk {kiosk}",
      doneLabel: "Done with kiosk {kiosk}",
      takenBy: "Taken by {name}",
      gone: "This hand-off has ended.",
      left: "The shopper has left (the kiosk was reset).",
      newHandoff: "New hand-off at kiosk {kiosk}: {reason}",
      status_open: "Open",
      status_claimed: "Claimed",
      status_closed: "Done",
      status_abandoned: "Abandoned",
      hOpened: "{time} · kiosk {kiosk} · {lang} · {reason}",
      hClaimed: "claimed {time} by {name}",
      hClosed: "done {time} by {name}",
      hAbandoned: "shopper left {time}",
      hWaited: "waited {t}",
      summary: "{n} hand-offs today · {open} waiting · {abandoned} abandoned",
      summaryNone: "No hand-offs today yet.",
    },
    zh: {
      htmlLang: "zh-Hans",
      switchTo: "en",
      switchLabel: "English",
      switchLang: "en",
      title: "门店员工",
      signInHeading: "登录以查看呼叫",
      nameLabel: "您的姓名",
      pinLabel: "门店员工 PIN",
      signIn: "登录",
      signOut: "退出",
      views: "视图",
      board: "正在等候",
      today: "今天",
      todayHeading: "今天的呼叫",
      refresh: "刷新",
      empty: "目前没有顾客在等候。新的呼叫会显示在这里。",
      soundOn: "声音：开",
      soundOff: "声音：关",
      live: "实时",
      polling: "轮询中",
      offline: "离线（正在重试）",
      needName: "请输入您的姓名和 PIN。",
      wrongPin: "PIN 错误。",
      wait: "PIN 错误次数过多，请 {n} 秒后再试。",
      unreachable: "无法连接到设备。请检查门店网络后重试。",
      failed: "出了点问题，请重试。",
      kiosk: "自助机",
      langEn: "EN",
      langZh: "中文",
      reason_button: "顾客按了“呼叫工作人员”",
      reason_abstention: "助手无法回答",
      reason_error: "助手出错",
      waiting: "已等候 {t}",
      waited: "等候了 {t}",
      overdue: "还没有人接手！",
      claimedBy: "{name} 正在赶来",
      calls: "已呼叫 {n} 次",
      question: "问题",
      transcript: "对话记录（{n}）",
      shopper: "顾客",
      assistant: "助手",
      coming: "我来处理",
      done: "已完成",
      comingLabel: "我去自助机 {kiosk}",
      doneLabel: "自助机 {kiosk} 已处理完毕",
      takenBy: "已被 {name} 接手",
      gone: "这个呼叫已经结束。",
      left: "顾客已离开（自助机已重置）。",
      newHandoff: "自助机 {kiosk} 有新的呼叫：{reason}",
      status_open: "等候中",
      status_claimed: "已接手",
      status_closed: "已完成",
      status_abandoned: "已放弃",
      hOpened: "{time} · 自助机 {kiosk} · {lang} · {reason}",
      hClaimed: "{time} 由 {name} 接手",
      hClosed: "{time} 由 {name} 完成",
      hAbandoned: "{time} 顾客离开",
      hWaited: "等候 {t}",
      summary: "今天共 {n} 个呼叫 · {open} 个等候中 · {abandoned} 个已放弃",
      summaryNone: "今天还没有呼叫。",
    },
  };
  const LANGUAGE_KEY = "staff.language";
  const SOUND_KEY = "staff.sound";
  const NAME_KEY = "staff.name";
  const BEEP_EVERY_S = 15;
  const SSE_RETRY_S = 30; // after a fallback to polling, try the live stream again this often
  const JSON_HEADERS = { "Content-Type": "application/json" };

  const $ = (id) => document.getElementById(id);
  const el = {
    link: $("link"),
    sound: $("sound"),
    language: $("language"),
    signout: $("signout"),
    signin: $("signin"),
    signinForm: $("signin-form"),
    name: $("name"),
    pin: $("pin"),
    signinError: $("signin-error"),
    signinButton: $("signin-button"),
    views: $("views"),
    showBoard: $("show-board"),
    showHistory: $("show-history"),
    board: $("board"),
    announce: $("announce"),
    empty: $("empty"),
    cards: $("cards"),
    history: $("history"),
    historyRefresh: $("history-refresh"),
    historySummary: $("history-summary"),
    historyList: $("history-list"),
  };

  const stored = (key) => {
    try {
      return window.localStorage.getItem(key);
    } catch (error) {
      return null; // storage switched off: nothing is remembered
    }
  };
  const store = (key, value) => {
    try {
      window.localStorage.setItem(key, value);
    } catch (error) {
      // as above
    }
  };

  const state = {
    lang: "en",
    me: null, // the sign-in body: {name, expires_at, remind_after_s, store_language, poll_s}
    view: "board",
    link: "offline",
    source: null, // the EventSource while live
    pollTimer: null,
    retryTimer: null,
    active: [], // the latest board
    skew: 0, // server clock minus this device's clock, in seconds
    seen: null, // ids of hand-offs already shown (null before the first board)
    history: null,
    sound: stored(SOUND_KEY) !== "off",
    audio: null,
    lastBeep: 0,
    beeps: 0,
    flash: false,
    waitUntil: 0, // sign-in refused until then (429 Retry-After)
  };

  const t = (key, values = {}) =>
    (STRINGS[state.lang][key] ?? key).replace(/\{(\w+)\}/g, (_, name) => (name in values ? String(values[name]) : ""));
  const serverNow = () => Date.now() / 1000 + state.skew;

  function duration(seconds) {
    const total = Math.max(0, Math.floor(seconds));
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = String(total % 60).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
  }

  function clock(epoch) {
    const options = { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
    return new Date(epoch * 1000).toLocaleTimeString(t("htmlLang"), options);
  }

  function make(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // --- language -------------------------------------------------------------------------------

  function applyLanguage(lang) {
    state.lang = STRINGS[lang] ? lang : "en";
    document.documentElement.lang = t("htmlLang");
    for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
    for (const node of document.querySelectorAll("[data-i18n-label]")) {
      node.setAttribute("aria-label", t(node.dataset.i18nLabel));
    }
    el.language.textContent = t("switchLabel");
    el.language.lang = t("switchLang");
    renderSound();
    renderLink();
    renderTitle();
    if (state.me) {
      el.cards.replaceChildren(); // rebuilt in the new language
      renderBoard();
      if (state.history) renderHistory();
    }
  }

  // --- sound: a beep made in the page (no audio file), unlocked by a tap ----------------------

  function unlockAudio() {
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) return;
    if (!state.audio) state.audio = new Context();
    if (state.audio.state === "suspended") state.audio.resume().catch(() => {});
  }

  function beep() {
    state.beeps += 1;
    document.body.dataset.beeps = String(state.beeps);
    if (!state.audio) return;
    const audio = state.audio;
    const start = audio.currentTime + 0.02;
    for (const [offset, pitch] of [
      [0, 880],
      [0.25, 660],
      [0.5, 880],
    ]) {
      const tone = audio.createOscillator();
      const gain = audio.createGain();
      tone.type = "sine";
      tone.frequency.value = pitch;
      gain.gain.setValueAtTime(0.0001, start + offset);
      gain.gain.exponentialRampToValueAtTime(0.4, start + offset + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, start + offset + 0.2);
      tone.connect(gain).connect(audio.destination);
      tone.start(start + offset);
      tone.stop(start + offset + 0.22);
    }
  }

  function renderSound() {
    el.sound.textContent = state.sound ? t("soundOn") : t("soundOff");
    el.sound.setAttribute("aria-pressed", String(state.sound));
  }

  // --- the connection indicator -------------------------------------------------------------

  function setLink(link) {
    state.link = link;
    renderLink();
  }

  function renderLink() {
    el.link.textContent = t(state.link);
    el.link.dataset.link = state.link;
    el.link.hidden = !state.me;
  }

  // --- talking to the box ---------------------------------------------------------------------

  async function api(path, options = {}) {
    const response = await fetch(path, { cache: "no-store", credentials: "same-origin", ...options });
    if (response.status === 401 && state.me && path !== "/staff/api/session") {
      signedOut();
      throw new Error("signed out");
    }
    return response;
  }

  async function errorMessage(response) {
    try {
      const body = await response.json();
      return typeof body.message === "string" ? body.message : "";
    } catch (error) {
      return "";
    }
  }

  // --- signing in and out -----------------------------------------------------------------------

  function showSignIn() {
    state.me = null;
    el.signin.hidden = false;
    for (const node of [el.views, el.board, el.history, el.signout, el.sound]) node.hidden = true;
    renderLink();
    renderTitle();
    (el.name.value ? el.pin : el.name).focus();
  }

  function signedIn(me) {
    state.me = me;
    if (!stored(LANGUAGE_KEY)) applyLanguage(me.store_language);
    el.signin.hidden = true;
    el.pin.value = "";
    for (const node of [el.views, el.signout, el.sound]) node.hidden = false;
    document.body.dataset.signedIn = me.name;
    showView(state.view);
    connect();
  }

  function signedOut() {
    disconnect();
    state.active = [];
    state.seen = null;
    state.history = null;
    el.cards.replaceChildren();
    el.historyList.replaceChildren();
    delete document.body.dataset.signedIn;
    showSignIn();
  }

  function signInError(text) {
    el.signinError.textContent = text;
    el.signinError.hidden = !text;
  }

  function waitCountdown() {
    const left = Math.ceil((state.waitUntil - Date.now()) / 1000);
    if (left > 0) {
      signInError(t("wait", { n: left }));
      el.signinButton.disabled = true;
      setTimeout(waitCountdown, 1000);
    } else if (state.waitUntil) {
      state.waitUntil = 0;
      el.signinButton.disabled = false;
      signInError("");
    }
  }

  async function signIn(event) {
    event.preventDefault();
    unlockAudio(); // this tap lets the page beep later
    const name = el.name.value.trim();
    const pin = el.pin.value;
    if (!name || !pin) {
      signInError(t("needName"));
      return;
    }
    store(NAME_KEY, name);
    el.signinButton.disabled = true;
    try {
      const response = await api("/staff/api/session", {
        method: "POST",
        headers: JSON_HEADERS,
        body: JSON.stringify({ pin, name }),
      });
      if (response.ok) {
        signInError("");
        signedIn(await response.json());
      } else if (response.status === 429) {
        const after = Number(response.headers.get("Retry-After")) || 60;
        state.waitUntil = Date.now() + after * 1000;
        el.pin.value = "";
        waitCountdown();
        return;
      } else if (response.status === 401) {
        el.pin.value = "";
        el.pin.focus();
        signInError(t("wrongPin"));
      } else {
        signInError(response.status === 422 || response.status === 400 ? t("needName") : t("failed"));
      }
    } catch (error) {
      signInError(t("unreachable"));
    }
    if (!state.waitUntil) el.signinButton.disabled = false;
  }

  async function signOut() {
    try {
      await fetch("/staff/api/session", { method: "DELETE", cache: "no-store" });
    } catch (error) {
      // the cookie expires on its own; this page forgets the session either way
    }
    signedOut();
  }

  // --- live board: server-sent events, or polling ---------------------------------------------

  function disconnect() {
    if (state.source) state.source.close();
    state.source = null;
    clearTimeout(state.pollTimer);
    clearTimeout(state.retryTimer);
    state.pollTimer = null;
    state.retryTimer = null;
  }

  function connect() {
    disconnect();
    if (!window.EventSource) {
      poll();
      return;
    }
    const source = new EventSource("/staff/api/events");
    state.source = source;
    source.addEventListener("open", () => {
      if (state.source === source) setLink("live");
    });
    source.addEventListener("handoffs", (event) => {
      if (state.source !== source) return;
      clearTimeout(state.pollTimer);
      state.pollTimer = null;
      setLink("live");
      board(JSON.parse(event.data));
    });
    source.addEventListener("error", () => {
      if (state.source !== source) return;
      // The stream broke (the box restarted, the network dropped, the session ended): fall back to
      // polling at once, which also tells a signed-out page; try the stream again a little later.
      source.close();
      state.source = null;
      poll();
      state.retryTimer = setTimeout(() => {
        if (state.me && !state.source) connect();
      }, SSE_RETRY_S * 1000);
    });
  }

  async function poll() {
    clearTimeout(state.pollTimer);
    state.pollTimer = null;
    if (!state.me) return;
    try {
      const response = await api("/staff/api/handoffs");
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const body = await response.json();
      if (!state.source) setLink("polling");
      board(body);
    } catch (error) {
      if (!state.me) return; // signed out
      if (!state.source) setLink("offline");
    }
    if (state.me && !state.source) state.pollTimer = setTimeout(poll, (Number(state.me.poll_s) || 3) * 1000);
  }

  async function refresh() {
    if (state.source && state.link === "live") return; // the stream brings the change
    await poll();
  }

  // --- the board -------------------------------------------------------------------------------

  function board(body) {
    state.skew = Number(body.now) - Date.now() / 1000;
    if (state.me && body.remind_after_s) state.me.remind_after_s = Number(body.remind_after_s);
    state.active = body.active || [];
    const fresh = state.active.filter((item) => state.seen && !state.seen.has(item.id));
    if (fresh.length) {
      el.announce.textContent = fresh
        .map((item) => t("newHandoff", { kiosk: item.kiosk_id, reason: t(`reason_${item.reason}`) }))
        .join(" ");
    }
    state.seen = new Set(state.active.map((item) => item.id));
    renderBoard();
    if (state.view === "history") loadHistory();
  }

  function renderBoard() {
    const keep = new Set(state.active.map((item) => item.id));
    for (const card of [...el.cards.children]) if (!keep.has(card.dataset.id)) card.remove();
    let previous = null;
    for (const item of state.active) {
      let card = el.cards.querySelector(`li[data-id="${CSS.escape(item.id)}"]`);
      if (!card) card = buildCard(item);
      updateCard(card, item);
      const place = previous ? previous.nextSibling : el.cards.firstChild;
      if (card !== place) el.cards.insertBefore(card, place);
      previous = card;
    }
    el.empty.hidden = state.active.length > 0;
    document.body.dataset.open = String(state.active.length);
    tick();
  }

  function buildCard(item) {
    const card = make("li", "card");
    card.dataset.id = item.id;
    const head = make("div", "card-head");
    const kiosk = make("h3", "kiosk");
    const badges = make("p", "badges");
    const language = make("span", "badge language");
    const reason = make("span", "badge reason");
    badges.append(language, reason);
    head.append(kiosk, badges);
    const wait = make("p", "wait");
    const who = make("p", "who");
    const overdue = make("p", "overdue-note", t("overdue"));
    const calls = make("p", "calls");
    const question = make("blockquote", "question");
    const transcript = make("details", "transcript");
    const summary = make("summary");
    const turns = make("ol", "turns");
    transcript.append(summary, turns);
    const message = make("p", "card-message");
    message.setAttribute("role", "status");
    const actions = make("div", "actions");
    const claim = make("button", "primary claim", t("coming"));
    claim.type = "button";
    claim.addEventListener("click", () => act(card, "claim"));
    const close = make("button", "secondary close", t("done"));
    close.type = "button";
    close.addEventListener("click", () => act(card, "close"));
    actions.append(claim, close);
    card.append(head, wait, who, overdue, calls, question, transcript, message, actions);
    return card;
  }

  function updateCard(card, item) {
    card.dataset.status = item.status;
    card.dataset.opened = String(item.opened_at);
    card.dataset.claimed = item.claimed_at ? String(item.claimed_at) : "";
    card.querySelector(".kiosk").textContent = `${t("kiosk")} ${item.kiosk_id}`;
    const language = card.querySelector(".language");
    language.textContent = item.language === "zh" ? t("langZh") : t("langEn");
    language.lang = item.language === "zh" ? "zh-Hans" : "en";
    card.querySelector(".reason").textContent = t(`reason_${item.reason}`) || item.reason;
    const who = card.querySelector(".who");
    who.textContent = item.claimed_by ? t("claimedBy", { name: item.claimed_by }) : "";
    who.hidden = !item.claimed_by;
    const calls = card.querySelector(".calls");
    calls.textContent = t("calls", { n: item.calls });
    calls.hidden = !(item.calls > 1);
    const question = card.querySelector(".question");
    question.textContent = item.question || "";
    question.hidden = !item.question;
    question.lang = item.language === "zh" ? "zh-Hans" : "en";
    const transcript = item.transcript || [];
    const turns = card.querySelector(".turns");
    const shown = `${transcript.length}:${transcript.length ? transcript[transcript.length - 1].created_at : ""}`;
    if (turns.dataset.shown !== shown) {
      turns.dataset.shown = shown;
      turns.lang = question.lang;
      turns.replaceChildren(
        ...transcript.flatMap((turn) => [
          line("shopper", t("shopper"), turn.query),
          ...(turn.answer ? [line("assistant", t("assistant"), turn.answer)] : []),
        ]),
      );
    }
    const details = card.querySelector(".transcript");
    details.hidden = transcript.length === 0;
    // One turn is the question above: folded. A longer conversation is what a colleague reads on the way.
    if (!details.dataset.shaped && transcript.length > 1) details.open = true;
    if (transcript.length > 1) details.dataset.shaped = "true";
    card.querySelector("summary").textContent = t("transcript", { n: transcript.length });
    const claim = card.querySelector(".claim");
    claim.hidden = item.status !== "open";
    claim.setAttribute("aria-label", t("comingLabel", { kiosk: item.kiosk_id }));
    claim.textContent = t("coming");
    const close = card.querySelector(".close");
    close.setAttribute("aria-label", t("doneLabel", { kiosk: item.kiosk_id }));
    close.textContent = t("done");
    card.setAttribute("aria-label", `${t("kiosk")} ${item.kiosk_id}, ${t(`status_${item.status}`)}`);
  }

  function line(kind, who, text) {
    const item = make("li", `line ${kind}`);
    item.append(make("span", "speaker", `${who}: `), make("span", "said", text));
    return item;
  }

  async function act(card, action) {
    const id = card.dataset.id;
    const message = card.querySelector(".card-message");
    for (const button of card.querySelectorAll(".actions button")) button.disabled = true;
    message.textContent = "";
    try {
      const response = await api(`/staff/api/handoffs/${encodeURIComponent(id)}/${action}`, {
        method: "POST",
        headers: JSON_HEADERS,
        body: "{}",
      });
      if (response.ok) {
        const item = await response.json();
        const index = state.active.findIndex((known) => known.id === id);
        if (item.status === "closed") state.active = state.active.filter((known) => known.id !== id);
        else if (index >= 0) state.active[index] = { ...state.active[index], ...item };
        renderBoard();
      } else {
        const text = await errorMessage(response);
        const taken = /claimed by (.+?)\.?$/i.exec(text);
        if (taken) message.textContent = t("takenBy", { name: taken[1] });
        else if (/left|abandon/i.test(text)) message.textContent = t("left");
        else message.textContent = response.status === 409 || response.status === 404 ? t("gone") : t("failed");
        card.dataset.refused = "true";
      }
    } catch (error) {
      if (state.me) message.textContent = t("unreachable");
    }
    for (const button of card.querySelectorAll(".actions button")) button.disabled = false;
    if (state.me) {
      await refresh();
      if (state.view === "history") loadHistory();
    }
  }

  // --- waiting times and reminders (every second) ----------------------------------------------

  function tick() {
    if (!state.me) return;
    const now = serverNow();
    const remind = Number(state.me.remind_after_s) || 60;
    let overdue = 0;
    for (const card of el.cards.children) {
      const opened = Number(card.dataset.opened);
      const claimed = Number(card.dataset.claimed) || 0;
      const open = card.dataset.status === "open";
      const waited = (claimed || now) - opened;
      card.querySelector(".wait").textContent = t(open ? "waiting" : "waited", { t: duration(waited) });
      const late = open && now - opened >= remind;
      card.dataset.overdue = String(late);
      card.querySelector(".overdue-note").hidden = !late;
      if (late) overdue += 1;
    }
    document.body.dataset.overdue = String(overdue);
    if (overdue && state.sound && Date.now() - state.lastBeep >= BEEP_EVERY_S * 1000) {
      state.lastBeep = Date.now();
      beep();
    }
    if (!overdue) state.lastBeep = 0; // the next overdue one beeps at once
    state.flash = overdue > 0 && !state.flash;
    renderTitle();
  }

  function renderTitle() {
    const open = state.me ? state.active.filter((item) => item.status === "open").length : 0;
    const base = open ? `(${open}) ${t("title")}` : t("title");
    document.title = state.flash ? `(!) ${base}` : base;
  }

  // --- today's history ---------------------------------------------------------------------------

  function showView(view) {
    state.view = view;
    el.board.hidden = view !== "board";
    el.history.hidden = view !== "history";
    el.showBoard.setAttribute("aria-pressed", String(view === "board"));
    el.showHistory.setAttribute("aria-pressed", String(view === "history"));
    if (view === "history") loadHistory();
  }

  async function loadHistory() {
    const midnight = new Date();
    midnight.setHours(0, 0, 0, 0);
    try {
      const response = await api(`/staff/api/history?since=${Math.floor(midnight.getTime() / 1000)}`);
      if (!response.ok) return;
      state.history = await response.json();
      renderHistory();
    } catch (error) {
      // offline: the indicator says so; the last list stays
    }
  }

  function renderHistory() {
    const items = state.history.data || [];
    const count = (status) => items.filter((item) => item.status === status).length;
    el.historySummary.textContent = items.length
      ? t("summary", { n: items.length, open: count("open") + count("claimed"), abandoned: count("abandoned") })
      : t("summaryNone");
    el.historyList.replaceChildren(
      ...items.map((item) => {
        const row = make("li", "entry");
        row.dataset.id = item.id;
        row.dataset.status = item.status;
        const top = make("p", "entry-top");
        const status = make("span", "badge status", t(`status_${item.status}`));
        const opened = t("hOpened", {
          time: clock(item.opened_at),
          kiosk: item.kiosk_id,
          lang: item.language === "zh" ? t("langZh") : t("langEn"),
          reason: t(`reason_${item.reason}`),
        });
        top.append(status, make("span", "entry-opened", opened));
        const steps = [];
        if (item.claimed_at) steps.push(t("hClaimed", { time: clock(item.claimed_at), name: item.claimed_by }));
        if (item.closed_at) steps.push(t("hClosed", { time: clock(item.closed_at), name: item.closed_by }));
        if (item.abandoned_at) steps.push(t("hAbandoned", { time: clock(item.abandoned_at) }));
        if (item.waited_s !== null && item.waited_s !== undefined) {
          steps.push(t("hWaited", { t: duration(item.waited_s) }));
        }
        row.append(top, make("p", "entry-steps", steps.join(" · ")));
        if (item.question) {
          const question = make("p", "entry-question", item.question);
          question.lang = item.language === "zh" ? "zh-Hans" : "en";
          row.append(question);
        }
        return row;
      }),
    );
  }

  // --- wiring ------------------------------------------------------------------------------------

  el.signinForm.addEventListener("submit", signIn);
  el.signout.addEventListener("click", signOut);
  el.language.addEventListener("click", () => {
    const lang = t("switchTo");
    store(LANGUAGE_KEY, lang);
    applyLanguage(lang);
  });
  el.sound.addEventListener("click", () => {
    state.sound = !state.sound;
    store(SOUND_KEY, state.sound ? "on" : "off");
    if (state.sound) unlockAudio();
    state.lastBeep = 0;
    renderSound();
  });
  el.showBoard.addEventListener("click", () => showView("board"));
  el.showHistory.addEventListener("click", () => showView("history"));
  el.historyRefresh.addEventListener("click", loadHistory);
  // A page signed in by its cookie (a reload) has had no tap yet: the first one unlocks the sound.
  document.addEventListener("pointerdown", unlockAudio, { capture: true, passive: true });
  document.addEventListener("keydown", unlockAudio, { capture: true, passive: true });

  async function start() {
    const chosen = stored(LANGUAGE_KEY);
    const browser = (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en";
    applyLanguage(chosen || browser);
    el.name.value = stored(NAME_KEY) || "";
    setInterval(tick, 1000);
    for (;;) {
      try {
        const response = await fetch("/staff/api/me", { cache: "no-store" });
        signInError("");
        if (response.ok) signedIn(await response.json());
        else showSignIn();
        break;
      } catch (error) {
        showSignIn();
        signInError(t("unreachable"));
        await new Promise((resolve) => setTimeout(resolve, 5000));
      }
    }
    document.body.dataset.ready = "true";
  }

  start();
})();
