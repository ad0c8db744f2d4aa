/* tfward's web page: live updates. Pages work without this script; it only keeps them current.
 *
 * A run page follows its run's event stream (server-sent events: `run`, `log`, `end`): log lines
 * are appended as they come (their ANSI colours as spans, built with textContent: never markup),
 * the status badge and the action buttons follow the run, and the other live parts of the page
 * (elements with `data-live` and an id) are fetched again from the server and swapped in, so
 * they are rendered by the same templates as the page itself. The workspaces and releases pages
 * follow the workspace stream (`/events`) the same way.
 */
"use strict";

(() => {
  // ---- ANSI colours (the same rules as daemon/web/ansi.py) ---------------------------------
  const ESCAPE = /\x1b(?:\[([0-9;]*)m|\[[0-9;?]*[A-Za-z]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()][0-9A-Za-z]|.)/g;
  const plain = () => ({ b: false, f: false, i: false, u: false, fg: null, bg: null });

  function applySgr(style, params) {
    const codes = params ? params.split(";").map((p) => (p ? Number(p) : 0)) : [0];
    let s = { ...style };
    for (let k = 0; k < codes.length; k++) {
      const c = codes[k];
      if (c === 38 || c === 48) { k += codes[k + 1] === 5 ? 2 : 4; continue; }
      if (c === 0) s = plain();
      else if (c === 1) s.b = true;
      else if (c === 2) s.f = true;
      else if (c === 3) s.i = true;
      else if (c === 4) s.u = true;
      else if (c === 22) { s.b = false; s.f = false; }
      else if (c === 23) s.i = false;
      else if (c === 24) s.u = false;
      else if (c === 39) s.fg = null;
      else if (c === 49) s.bg = null;
      else if (c >= 30 && c <= 37) s.fg = c - 30;
      else if (c >= 90 && c <= 97) s.fg = c - 90 + 8;
      else if (c >= 40 && c <= 47) s.bg = c - 40;
      else if (c >= 100 && c <= 107) s.bg = c - 100 + 8;
    }
    return s;
  }

  function classesOf(s) {
    const names = [];
    if (s.b) names.push("a-b");
    if (s.f) names.push("a-f");
    if (s.i) names.push("a-i");
    if (s.u) names.push("a-u");
    if (s.fg !== null) names.push("a-fg" + s.fg);
    if (s.bg !== null) names.push("a-bg" + s.bg);
    return names.join(" ");
  }

  function appendAnsi(pre, text, state) {
    const emit = (piece) => {
      if (!piece) return;
      const classes = classesOf(state.style);
      if (!classes) { pre.appendChild(document.createTextNode(piece)); return; }
      const span = document.createElement("span");
      span.className = classes;
      span.textContent = piece;
      pre.appendChild(span);
    };
    let at = 0;
    for (const match of text.matchAll(ESCAPE)) {
      emit(text.slice(at, match.index));
      at = match.index + match[0].length;
      if (match[1] !== undefined) state.style = applySgr(state.style, match[1]);
    }
    emit(text.slice(at));
  }

  // ---- fetching a page again and swapping its live parts -----------------------------------
  function refresher(url, pick) {
    let timer = null;
    return () => {
      if (timer !== null) return;
      timer = setTimeout(async () => {
        timer = null;
        try {
          const answer = await fetch(url(), { credentials: "same-origin", redirect: "manual" });
          if (answer.status !== 200) return;
          const fresh = new DOMParser().parseFromString(await answer.text(), "text/html");
          pick(fresh);
        } catch (error) {
          // A page that cannot be fetched now stays as it is; the next change tries again.
        }
      }, 300);
    };
  }

  // Swaps each live part for its fresh copy; what the person opened (a plan's details) stays
  // open.
  function swapLive(fresh, scope) {
    for (const old of scope.querySelectorAll("[data-live][id]")) {
      const replacement = fresh.getElementById(old.id);
      if (!replacement) continue;
      const opened = new Set([...old.querySelectorAll("details[open] > summary")].map((s) => s.textContent));
      const next = document.importNode(replacement, true);
      for (const summary of next.querySelectorAll("details > summary")) {
        if (opened.has(summary.textContent)) summary.parentElement.open = true;
      }
      old.replaceWith(next);
    }
  }

  // ---- a run ----------------------------------------------------------------------------
  function followRun(root) {
    const log = document.getElementById("log");
    const state = { style: plain() };
    log.scrollTop = log.scrollHeight;
    if (!root.dataset.events) return;
    const refresh = refresher(() => location.pathname + "?live=true", (fresh) => swapLive(fresh, root));
    const source = new EventSource(root.dataset.events + "?after=" + encodeURIComponent(log.dataset.offset));
    source.addEventListener("log", (event) => {
      const piece = JSON.parse(event.data);
      const following = log.scrollTop + log.clientHeight >= log.scrollHeight - 32;
      appendAnsi(log, piece.lines, state);
      log.dataset.offset = event.lastEventId;
      if (following) log.scrollTop = log.scrollHeight;
    });
    // The page was rendered as the run was: only a change of status or stage is news (the
    // stream starts every connection with the run as it is).
    let shown = root.dataset.status + "/" + root.dataset.stage;
    source.addEventListener("run", (event) => {
      const run = JSON.parse(event.data);
      showRun(run);
      const now = run.status + "/" + (run.stage || "");
      if (now !== shown) { shown = now; refresh(); }
    });
    source.addEventListener("end", () => {
      source.close();
      refresh();
    });
  }

  function showRun(run) {
    const badge = document.querySelector("#status .badge");
    if (badge) {
      badge.className = "badge s-" + run.status;
      badge.dataset.status = run.status;
      badge.textContent = run.status.replaceAll("_", " ");
    }
    const stage = document.getElementById("stage");
    if (stage) stage.textContent = run.stage || "—";
    let shown = 0;
    for (const form of document.querySelectorAll("form[data-action]")) {
      form.hidden = !run.actions.includes(form.dataset.action);
      if (!form.hidden) shown++;
    }
    const none = document.getElementById("no-actions");
    if (none) none.hidden = shown > 0;
  }

  // ---- workspaces and releases ------------------------------------------------------------
  function followWorkspaces(root) {
    const seen = new Map();
    const dirty = new Set();
    const refresh = refresher(() => location.pathname + location.search, (fresh) => {
      if (root.id !== "workspaces") { swapLive(fresh, document); return; }
      for (const name of dirty) {
        const selector = `tr[data-workspace="${CSS.escape(name)}"]`;
        const now = root.querySelector(selector);
        const next = fresh.querySelector(selector);
        if (now && next) now.replaceWith(document.importNode(next, true));
        else if (now) now.remove();
      }
      dirty.clear();
    });
    const source = new EventSource(root.dataset.events);
    const changed = (name, data) => {
      const before = seen.get(name);
      seen.set(name, data);
      // The stream starts with every workspace: only a change after that is news.
      if (before !== undefined && before !== data) { dirty.add(name); refresh(); }
    };
    source.addEventListener("workspace", (event) => changed(JSON.parse(event.data).name, event.data));
    source.addEventListener("workspace_removed", (event) => changed(JSON.parse(event.data).name, null));
  }

  document.addEventListener("DOMContentLoaded", () => {
    const run = document.getElementById("run");
    if (run) followRun(run);
    const overview = document.querySelector("#workspaces[data-events], #releases[data-events], #release[data-events]");
    if (overview) followWorkspaces(overview);
  });
})();
