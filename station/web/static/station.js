// The operator page: shows the station's state and follows its event stream.
//
// The server sends the whole state first on every (re)connection, then each event as it
// happens; `apply` folds an event into the state exactly as station/web/hub.py does, and the
// page is drawn from the state. Commands are POSTs with the X-Station-CSRF header (see
// station/web/security.py). Plain DOM, no framework, no build step, nothing fetched from
// elsewhere.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  let state = null;
  let source = null;
  let shownPromptId = null;
  const phaseBodies = new Map(); // entry object -> its <tbody>
  const clock = { timer: null };
  const MAX_LOGS_SHOWN = 50;

  // -- talking to the server ---------------------------------------------------------------

  async function post(path, body) {
    const response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Station-CSRF": "1" },
      body: JSON.stringify(body || {}),
      credentials: "same-origin",
    });
    let data = {};
    try {
      data = await response.json();
    } catch (_) {
      data = { error: `HTTP ${response.status}` };
    }
    if (!response.ok) {
      const error = new Error(data.error || `HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  function connect() {
    if (source) source.close();
    source = new EventSource("/api/events");
    source.onopen = () => setConnection(true);
    source.onerror = () => setConnection(false);
    source.onmessage = (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch (_) {
        return;
      }
      receive(event);
    };
  }

  function setConnection(online) {
    const el = $("connection");
    el.textContent = online ? "live" : "reconnecting…";
    el.className = "connection " + (online ? "online" : "offline");
  }

  // -- folding events into the state (mirrors StationHub._apply) --------------------------

  function planned(name) {
    return {
      name, attempt: null, outcome: null, running: false, duration_s: null, reason: null,
      error: null, teardown: false, measurements: [], logs: [], prompts: [],
    };
  }

  function findEntry(phases, name, attempt) {
    for (let i = phases.length - 1; i >= 0; i--) {
      const e = phases[i];
      if (e.name === name && e.attempt !== null && (attempt == null || e.attempt === attempt)) {
        return e;
      }
    }
    return null;
  }

  function apply(event) {
    const unit = state ? state.unit : null;
    switch (event.type) {
      case "state": {
        const { type, ts, ...rest } = event;
        state = rest;
        return "all";
      }
      case "run_started":
        state.refusal = null;
        state.unit = {
          run_id: event.run_id, procedure: event.procedure, serial: event.serial,
          part_number: event.part_number, revision: event.revision,
          batch_number: event.batch_number, operator: event.operator,
          simulated: event.simulated, started_at: event.started_at || event.ts,
          ended_at: null, outcome: null, reason: null, failures: [], error: null,
          phases: (event.phases || []).map(planned),
        };
        return "all";
      case "phase_started": {
        if (!unit) return null;
        const attempt = event.attempt || 0;
        let entry = unit.phases.find((e) => e.name === event.phase && e.attempt === null);
        if (entry) {
          entry.attempt = attempt;
          entry.running = true;
        } else {
          entry = planned(event.phase);
          entry.attempt = attempt;
          entry.running = true;
          let last = -1;
          unit.phases.forEach((e, i) => { if (e.name === event.phase) last = i; });
          if (last < 0) unit.phases.push(entry);
          else unit.phases.splice(last + 1, 0, entry);
          return "phases";
        }
        return entry;
      }
      case "measurement": {
        if (!unit) return null;
        const entry = findEntry(unit.phases, event.phase, event.attempt);
        if (!entry) return null;
        entry.measurements.push({
          name: event.name, value: event.value, display: event.display, units: event.units,
          limits: event.limits, outcome: event.outcome, marginal: event.marginal,
          marginal_band: event.marginal_band, failed: event.failed,
        });
        return entry;
      }
      case "phase_ended": {
        if (!unit) return null;
        const entry = findEntry(unit.phases, event.phase, event.attempt);
        if (!entry) return null;
        Object.assign(entry, {
          outcome: event.outcome, running: false, duration_s: event.duration_s,
          reason: event.reason, error: event.error, teardown: !!event.teardown,
        });
        return entry;
      }
      case "log": {
        if (!unit) return null;
        const entry = findEntry(unit.phases, event.phase, null);
        if (!entry) return null;
        if (entry.logs.length < MAX_LOGS_SHOWN) {
          entry.logs.push({ level: event.level, message: event.message });
        } else {
          entry.logs_dropped = (entry.logs_dropped || 0) + 1;
        }
        return entry;
      }
      case "prompt":
        state.prompt = Object.assign({}, event.prompt || {});
        return "prompt";
      case "prompt_answered": {
        const prompt = state.prompt;
        if (prompt && prompt.id === event.id) state.prompt = null;
        if (unit && prompt) {
          const entry = findEntry(unit.phases, prompt.phase, null);
          if (entry) {
            entry.prompts.push({
              text: prompt.text, answer: event.answer, answered_by: event.answered_by,
              error: event.error,
            });
          }
        }
        return "prompt";
      }
      case "run_ended":
        if (!unit) return null;
        Object.assign(unit, {
          outcome: event.outcome, reason: event.reason, failures: event.failures || [],
          ended_at: event.ended_at || event.ts, duration_s: event.duration_s,
        });
        state.prompt = null;
        return "all";
      case "counters": {
        const { type, ts, ...rest } = event;
        state.counters = rest;
        return "side";
      }
      case "instrument_status":
        state.instruments = Object.assign({}, event.instruments || {});
        return "header";
      case "unit_refused":
        state.refusal = {
          procedure: event.procedure, serial: event.serial, reason: event.reason,
          pattern: event.pattern,
        };
        return "controls";
      case "recent":
        state.recent = event.units || [];
        return "side";
      case "station":
        state.busy = !!event.busy;
        state.aborting = !!event.aborting;
        if ("error" in event && state.unit) state.unit.error = event.error;
        return "all";
      default:
        return null; // upload, and anything newer than this page: the next state covers it
    }
  }

  function receive(event) {
    if (state === null && event.type !== "state") return;
    const changed = apply(event);
    if (changed === null) return;
    if (changed === "all") renderAll();
    else if (changed === "phases") { renderPhases(); renderVerdict(); }
    else if (changed === "prompt") renderPrompt();
    else if (changed === "side") renderSide();
    else if (changed === "header") renderHeader();
    else if (changed === "controls") renderControls();
    else { renderEntry(changed); renderVerdict(); }
    window.stationRendered = { type: event.type, ts: event.ts, at: performance.timeOrigin + performance.now() };
    document.dispatchEvent(new CustomEvent("station:rendered", { detail: event }));
  }

  // -- drawing -----------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function outcomeBadge(outcome) {
    const text = outcome || "PENDING";
    return el("span", { class: `outcome ${text}`, "data-outcome": text, text });
  }

  function seconds(value) {
    if (value === null || value === undefined) return "";
    return value < 10 ? `${value.toFixed(2)} s` : `${value.toFixed(1)} s`;
  }

  function renderAll() {
    renderHeader();
    renderControls();
    renderVerdict();
    renderPhases();
    renderPrompt();
    renderSide();
  }

  function renderHeader() {
    $("station-name").textContent = state.station.name || "station";
    document.title = `${state.station.name || "station"}: operator page`;
    $("sim-badge").hidden = !state.station.simulated;
    const list = $("instruments");
    list.replaceChildren();
    for (const [name, status] of Object.entries(state.instruments || {})) {
      const kind = status === "ok" || status === "reopened" ? "ok"
        : status === "not opened" || status === "closed" ? "idle" : "bad";
      list.append(el("li", { class: kind, "data-instrument": name, title: status, text: `${name}: ${status}` }));
    }
  }

  function renderControls() {
    const select = $("procedure");
    const names = state.procedures.map((p) => p.name);
    const current = select.value;
    if ([...select.options].map((o) => o.value).join("\n") !== names.join("\n")) {
      select.replaceChildren(...names.map((n) => el("option", { value: n, text: n })));
      if (names.includes(current)) select.value = current;
    }
    const chosen = state.procedures.find((p) => p.name === select.value);
    $("pattern-hint").textContent = chosen && chosen.serial_pattern
      ? `serial pattern: ${chosen.serial_pattern}` : "";
    const busy = !!state.busy;
    $("start").disabled = busy;
    $("serial").disabled = busy;
    select.disabled = busy;
    const abort = $("abort");
    abort.hidden = !busy;
    abort.disabled = !!state.aborting;
    abort.textContent = state.aborting ? "Aborting…" : "Abort";
    const refusal = $("refusal");
    if (state.refusal) {
      refusal.hidden = false;
      refusal.textContent = `Refused: ${state.refusal.reason}`;
    } else if (!refusal.dataset.local) {
      refusal.hidden = true;
    }
    if (!busy && document.activeElement !== select) $("serial").focus();
  }

  function renderVerdict() {
    const verdict = $("verdict");
    const unit = state.unit;
    let text = "READY";
    let kind = "idle";
    if (unit && unit.outcome) {
      text = unit.outcome;
      kind = unit.outcome.toLowerCase();
    } else if (unit && unit.error && !state.busy) {
      text = "ERROR";
      kind = "error";
    } else if (state.busy) {
      const running = unit ? unit.phases.find((e) => e.running) : null;
      text = state.aborting ? "ABORTING…" : running ? `RUNNING: ${running.name}` : "STARTING…";
      kind = "running";
    }
    verdict.textContent = text;
    verdict.className = `verdict ${kind}`;
    verdict.dataset.verdict = kind === "running" ? "RUNNING" : text;
    const info = $("unit-info");
    if (unit) {
      const parts = [unit.serial, unit.procedure];
      if (unit.part_number) parts.push(unit.part_number + (unit.revision ? ` rev ${unit.revision}` : ""));
      parts.push(unit.duration_s != null ? seconds(unit.duration_s) : elapsed(unit.started_at));
      info.textContent = parts.filter(Boolean).join("  ·  ");
    } else {
      info.textContent = "";
    }
    const reason = $("unit-reason");
    const lines = [];
    if (unit && unit.error) lines.push(unit.error);
    if (unit && unit.failures && unit.failures.length) lines.push(...unit.failures);
    else if (unit && unit.reason && unit.outcome && unit.outcome !== "PASS") lines.push(unit.reason);
    reason.hidden = lines.length === 0;
    reason.textContent = lines.join("\n");
    tickClock(state.busy);
  }

  function elapsed(startedAt) {
    const started = Date.parse(startedAt);
    return Number.isNaN(started) ? "" : seconds(Math.max(0, (Date.now() - started) / 1000));
  }

  function tickClock(running) {
    if (running && clock.timer === null) {
      clock.timer = setInterval(() => {
        if (state && state.unit && state.busy && state.unit.duration_s == null) {
          const info = $("unit-info");
          info.textContent = info.textContent.replace(/[\d.]+ s$|$/, elapsed(state.unit.started_at));
        }
      }, 500);
    } else if (!running && clock.timer !== null) {
      clearInterval(clock.timer);
      clock.timer = null;
    }
  }

  function renderPhases() {
    const table = $("phases");
    for (const body of [...table.tBodies]) body.remove(); // a live collection: copy first
    phaseBodies.clear();
    const unit = state.unit;
    if (!unit) return;
    for (const entry of unit.phases) {
      const body = el("tbody");
      phaseBodies.set(entry, body);
      fillEntry(body, entry);
      table.append(body);
    }
  }

  function renderEntry(entry) {
    const body = phaseBodies.get(entry);
    if (!body) {
      renderPhases();
      return;
    }
    fillEntry(body, entry);
  }

  function fillEntry(body, entry) {
    const rows = [];
    const outcome = entry.running ? "RUNNING" : entry.outcome;
    const title = entry.attempt ? `${entry.name} (retry ${entry.attempt})` : entry.name;
    const detail = entry.error ? `${entry.error.type}: ${entry.error.message}` : entry.reason || "";
    rows.push(el("tr", { class: `phase${entry.attempt === null ? " pending" : ""}`, "data-phase": entry.name },
      el("td", { text: title }),
      el("td", { class: "value", text: detail ? "" : seconds(entry.duration_s) }),
      el("td", { class: "limits", text: detail }),
      el("td", {}, outcomeBadge(outcome))));
    for (const m of entry.measurements) {
      const value = m.display !== null && m.display !== undefined ? m.display : "(not set)";
      const outcomeText = m.outcome === "PASS" && m.marginal ? "MARGINAL" : m.outcome;
      rows.push(el("tr", { class: "measurement", "data-measurement": m.name, title: m.failed || m.marginal_band || "" },
        el("td", { text: m.name }),
        el("td", { class: "value", text: value }),
        el("td", { class: "limits", text: m.limits || "" }),
        el("td", {}, outcomeBadge(outcomeText))));
    }
    for (const p of entry.prompts) {
      const answer = p.error ? p.error : JSON.stringify(p.answer);
      rows.push(el("tr", { class: "log" }, el("td", { colspan: "4", text: `? ${p.text} → ${answer}` })));
    }
    for (const line of entry.logs) {
      rows.push(el("tr", { class: "log" }, el("td", { colspan: "4", text: `${line.level} ${line.message}` })));
    }
    if (entry.logs_dropped) {
      rows.push(el("tr", { class: "log" }, el("td", { colspan: "4", text: `(${entry.logs_dropped} more lines in the record)` })));
    }
    body.replaceChildren(...rows);
  }

  function renderSide() {
    const c = state.counters || {};
    const fpy = c.first_pass_yield === null || c.first_pass_yield === undefined
      ? "–" : `${(c.first_pass_yield * 100).toFixed(1)}%`;
    const mean = c.mean_cycle_s === null || c.mean_cycle_s === undefined ? "–" : seconds(c.mean_cycle_s);
    const items = [
      ["tested", c.tested ?? 0], ["passed", c.passed ?? 0], ["failed", c.failed ?? 0],
      ["errors", (c.errors ?? 0) + (c.aborted ?? 0)], ["first-pass yield", fpy], ["mean cycle", mean],
    ];
    $("counters").replaceChildren(...items.map(([name, value]) =>
      el("div", { "data-counter": name }, el("dt", { text: name }), el("dd", { text: value }))));
    const body = $("recent").tBodies[0];
    body.replaceChildren(...(state.recent || []).slice(0, 12).map((u) =>
      el("tr", { "data-run": u.run_id },
        el("td", { text: u.serial }),
        el("td", { text: u.procedure }),
        el("td", {}, outcomeBadge(u.outcome)),
        el("td", { text: u.upload, title: u.upload_message || "" }),
        el("td", { text: timeOf(u.started_at, u.duration_s) }))));
  }

  function timeOf(startedAt, duration) {
    const started = Date.parse(startedAt);
    if (Number.isNaN(started)) return "";
    return new Date(started + (duration || 0) * 1000).toLocaleTimeString([], { hour12: false });
  }

  // -- prompts -----------------------------------------------------------------------------

  function renderPrompt() {
    const dialog = $("prompt");
    const prompt = state.prompt;
    if (!prompt) {
      shownPromptId = null;
      if (dialog.open) dialog.close();
      return;
    }
    if (shownPromptId === prompt.id && dialog.open) return;
    shownPromptId = prompt.id;
    $("prompt-phase").textContent = prompt.phase ? `phase ${prompt.phase}` : "";
    $("prompt-text").textContent = prompt.text;
    const image = $("prompt-image");
    if (prompt.image) {
      image.src = `/api/prompts/${encodeURIComponent(prompt.id)}/image`;
      image.alt = prompt.image;
      image.hidden = false;
    } else {
      image.removeAttribute("src");
      image.hidden = true;
    }
    const error = $("prompt-error");
    error.hidden = true;
    const timeout = $("prompt-timeout");
    timeout.hidden = prompt.timeout_s == null;
    timeout.textContent = prompt.timeout_s == null ? "" : `answer within ${prompt.timeout_s} s`;
    const area = $("prompt-input");
    area.replaceChildren(answerControls(prompt));
    if (!dialog.open) dialog.showModal();
    const first = area.querySelector("input, button");
    if (first) first.focus();
  }

  function answerControls(prompt) {
    const box = el("div", { class: "answers" });
    const send = (value) => answer(prompt.id, value);
    if (prompt.kind === "confirm") {
      const yes = el("button", { type: "button", class: "primary", text: "Yes" });
      const no = el("button", { type: "button", class: "secondary", text: "No" });
      yes.onclick = () => send(true);
      no.onclick = () => send(false);
      box.append(yes, no);
    } else if (prompt.kind === "choice") {
      for (const choice of prompt.choices || []) {
        const button = el("button", { type: "button", class: "primary", text: choice });
        button.onclick = () => send(choice);
        box.append(button);
      }
    } else {
      const input = el("input", {
        id: "prompt-answer",
        type: prompt.kind === "number" ? "number" : "text",
        step: prompt.kind === "number" ? "any" : null,
        value: prompt.default === null || prompt.default === undefined ? "" : String(prompt.default),
        autocomplete: "off",
        "aria-label": "Answer",
      });
      const ok = el("button", { type: "submit", class: "primary", text: "OK" });
      const submit = (event) => {
        event.preventDefault();
        send(prompt.kind === "number" && input.value.trim() !== "" ? Number(input.value) : input.value);
      };
      ok.onclick = submit;
      input.onkeydown = (event) => { if (event.key === "Enter") submit(event); };
      box.append(input, ok);
    }
    return box;
  }

  async function answer(promptId, value) {
    const error = $("prompt-error");
    try {
      await post(`/api/prompts/${encodeURIComponent(promptId)}`, { answer: value });
      error.hidden = true;
    } catch (exc) {
      error.textContent = exc.message;
      error.hidden = false;
    }
  }

  // -- the controls ------------------------------------------------------------------------

  async function start(event) {
    event.preventDefault();
    const refusal = $("refusal");
    const serial = $("serial").value.trim();
    const procedure = $("procedure").value;
    delete refusal.dataset.local;
    refusal.hidden = true;
    if (!serial) {
      showRefusal("Scan or type the serial number first.");
      return;
    }
    try {
      await post("/api/runs", { procedure, serial });
      $("serial").value = "";
    } catch (exc) {
      showRefusal(exc.message);
      $("serial").select();
    }
  }

  function showRefusal(text) {
    const refusal = $("refusal");
    refusal.textContent = `Refused: ${text}`;
    refusal.hidden = false;
    refusal.dataset.local = "1";
  }

  async function abort() {
    try {
      await post("/api/abort", {});
    } catch (exc) {
      showRefusal(exc.message);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("start-form").addEventListener("submit", start);
    $("abort").addEventListener("click", abort);
    $("procedure").addEventListener("change", () => state && renderControls());
    $("prompt").addEventListener("cancel", (event) => event.preventDefault()); // Esc: not an answer
    connect();
  });
})();
