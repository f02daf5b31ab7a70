// The simulator dashboard: renders /sim/state as it arrives on /sim/events (server-sent
// events), or by polling /sim/state when the stream is unavailable, and sends the controls to
// the simulator's /sim/ endpoints. No framework and no build step: plain DOM.
"use strict";

// The faults the picker offers, as POST /sim/faults takes them.
const FAULTS = {
  none: {},
  asleep: { asleep: true },
  legacy: { legacy: true },
  rate: { rate_limit_retry_after: 30 },
  region: { misdirected_host: "fleet-api.prd.eu.vn.cloud.tesla.com" },
  slow: { delay_ms: 3000 },
  fail: { fail_after_execution: 500 },
  refuse: { refuse: "busy" },
};

const FAULT_TEXT = {
  asleep: "Unreachable: every request for this car answers 408",
  legacy: "No Vehicle Command Protocol: signed commands answer 422, REST commands work",
  rate: "Rate limited: every request answers 429, Retry-After 30 s",
  region: "Wrong region: every request answers 421 with the EU host",
  slow: "Slow: every answer waits 3 s more",
  fail: "Commands run, then the Fleet API answers 500",
  refuse: "The car refuses every command (\"busy\")",
};

const $ = (id) => document.getElementById(id);
const cards = new Map();

function money(usd, digits) {
  return "$" + usd.toFixed(digits);
}

function temp(c) {
  return (Math.round(c * 10) / 10).toFixed(1) + "°C";
}

function duration(sec) {
  if (!sec) return null;
  if (sec < 60) return sec + " s";
  if (sec < 3600) return Math.round(sec / 60) + " min";
  return (sec / 3600).toFixed(1) + " h";
}

function faultKey(f) {
  const keys = Object.keys(f).filter((k) => f[k]);
  if (keys.length === 0) return "none";
  for (const [name, want] of Object.entries(FAULTS)) {
    const wk = Object.keys(want);
    if (wk.length === keys.length && wk.every((k) => f[k] === want[k])) return name;
  }
  return "custom";
}

function set(el, field, text) {
  const node = el.querySelector(`[data-field="${field}"]`);
  if (node && node.textContent !== text) node.textContent = text;
  return node;
}

function flag(node, name, on) {
  if (on) node.setAttribute(name, "");
  else node.removeAttribute(name);
}

async function post(path, body) {
  const init = { method: "POST", headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  if (!resp.ok) {
    const text = await resp.text();
    throw new Error(`${path}: ${resp.status} ${text}`);
  }
  if (!source) refresh();
}

function newCard(v) {
  const el = $("car-template").content.firstElementChild.cloneNode(true);
  el.dataset.vin = v.vin;
  const act = (name, fn) => {
    const node = el.querySelector(`[data-action="${name}"]`);
    node.addEventListener(node.tagName === "SELECT" ? "change" : "click", async () => {
      node.disabled = true;
      try {
        await fn(node);
      } catch (err) {
        console.error(err);
        alert(err.message);
      } finally {
        node.disabled = false;
      }
    });
  };
  const vin = encodeURIComponent(v.vin);
  act("sleep", () => post(`vehicles/${vin}/asleep`, { asleep: true }));
  act("wake", () => post(`vehicles/${vin}/wake`));
  act("reboot", () => post(`reboot?vin=${vin}`));
  act("fault", (sel) => post("faults", { vin: v.vin, fault: FAULTS[sel.value] || {} }));
  return el;
}

function renderCar(el, v) {
  const st = v.state;
  el.dataset.status = v.status;
  set(el, "name", st.name);
  set(el, "model", v.model);
  set(el, "vin", v.vin);
  const status = set(el, "status", v.status);
  status.dataset.status = v.status;

  const fk = faultKey(v.fault);
  const banner = set(el, "fault-banner", fk === "none" ? "" : FAULT_TEXT[fk] || "Custom fault: " + JSON.stringify(v.fault));
  banner.hidden = fk === "none";
  const sel = el.querySelector('[data-action="fault"]');
  if (document.activeElement !== sel && !sel.disabled) sel.value = fk;

  const level = st.battery_level;
  set(el, "battery", level.toFixed(1) + " %");
  set(el, "range", Math.round(v.range_miles) + " mi");
  const charging = set(el, "charging", v.charging_state === "Charging"
    ? `Charging · ${st.charging_amps} A · ${(st.charging_amps * 0.24).toFixed(1)} kW`
    : v.charging_state);
  flag(charging, "data-idle", v.charging_state !== "Charging");
  const fill = el.querySelector('[data-field="fill"]');
  fill.style.width = Math.max(0, Math.min(100, level)) + "%";
  flag(fill, "data-low", level < 20);
  flag(fill, "data-charging", v.charging_state === "Charging");
  el.querySelector('[data-field="limit-marker"]').style.left = st.charge_limit + "%";
  el.querySelector('[data-field="bar-label"]').setAttribute("aria-label", `Battery ${level.toFixed(0)} %, limit ${st.charge_limit} %`);
  set(el, "limit", st.charge_limit + " %");

  const locked = set(el, "locked", st.locked ? "Locked" : "Unlocked");
  flag(locked, "data-alert", !st.locked);
  const climate = set(el, "climate", st.climate_on ? `Climate on · ${temp(st.driver_temp_c)}` : "Climate off");
  flag(climate, "data-on", st.climate_on);
  set(el, "cabin", `Inside ${temp(st.inside_temp_c)} · outside ${temp(st.outside_temp_c)}`);
  const sentry = set(el, "sentry", st.sentry_mode ? "Sentry on" : "");
  flag(sentry, "data-on", st.sentry_mode);
  const open = [];
  if (st.front_trunk_open) open.push("frunk");
  if (st.rear_trunk_open) open.push("trunk");
  if (st.windows_vented) open.push("windows");
  const closures = set(el, "closures", open.length ? "Open: " + open.join(", ") : "");
  flag(closures, "data-alert", open.length > 0);

  el.querySelector('[data-action="sleep"]').hidden = v.status === "asleep";
  el.querySelector('[data-action="wake"]').hidden = v.status === "online";

  const body = el.querySelector('[data-field="recent"]');
  const rows = v.recent.map((e) => {
    const tr = document.createElement("tr");
    const t = document.createElement("td");
    t.className = "time";
    t.textContent = new Date(e.at).toLocaleTimeString();
    const kind = document.createElement("td");
    const badge = document.createElement("span");
    badge.className = "kind";
    badge.dataset.kind = e.domain === "REST" ? "rest" : "signed";
    badge.textContent = e.domain === "REST" ? "REST" : "Signed";
    kind.append(badge);
    const action = document.createElement("td");
    action.className = "action";
    action.textContent = e.action;
    if (e.domain !== "REST") {
      const d = document.createElement("div");
      d.className = "domain";
      d.textContent = e.domain;
      action.append(d);
    }
    const result = document.createElement("td");
    result.className = "result";
    result.textContent = e.result || "ok";
    flag(result, "data-ok", !e.result || e.result === "ok");
    tr.append(t, kind, action, result);
    return tr;
  });
  body.replaceChildren(...rows);
  el.querySelector('[data-field="recent-none"]').hidden = rows.length > 0;
}

function render(state) {
  const list = $("cars");
  $("empty").hidden = state.vehicles.length > 0;
  for (const v of state.vehicles) {
    let el = cards.get(v.vin);
    if (!el) {
      el = newCard(v);
      cards.set(v.vin, el);
      list.append(el);
    }
    renderCar(el, v);
  }

  const billing = $("billing");
  let calls = 0;
  billing.replaceChildren(...state.billing.map((b) => {
    calls += b.calls;
    const tr = document.createElement("tr");
    for (const [text, cls] of [[b.category, ""], [String(b.calls), "num"], [money(b.per_call_usd, 3), "num"], [money(b.usd, 4), "num"]]) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.append(td);
    }
    return tr;
  }));
  $("billing-calls").textContent = String(calls);
  $("billing-total").textContent = money(state.total_usd, 4);
  $("total-usd").textContent = money(state.total_usd, 3);
  $("upstream").textContent = String(state.upstream);
  $("handshakes").textContent = String(state.handshakes);
  $("rejections").textContent = String(state.rejections);
  $("sleep-after").textContent = duration(state.sleep_after_sec) || "never";
  $("wake-time").textContent = duration(state.wake_time_sec) || "no time";
}

function setLive(mode, text) {
  $("live").dataset.mode = mode;
  $("live-text").textContent = text;
}

let source = null;
let pollTimer = null;

async function refresh() {
  try {
    const resp = await fetch("state", { cache: "no-store" });
    if (!resp.ok) throw new Error(String(resp.status));
    render(await resp.json());
    if (!source) setLive("polling", "Polling");
  } catch (err) {
    setLive("down", "Simulator unreachable");
  }
}

function poll() {
  clearTimeout(pollTimer);
  refresh().finally(() => {
    pollTimer = setTimeout(poll, 2000);
  });
}

function connect() {
  if (!window.EventSource) {
    poll();
    return;
  }
  let failures = 0;
  source = new EventSource("events");
  source.addEventListener("state", (e) => {
    failures = 0;
    setLive("live", "Live");
    render(JSON.parse(e.data));
  });
  source.addEventListener("error", () => {
    failures++;
    setLive("down", "Reconnecting…");
    if (failures >= 3) {
      // The stream keeps failing (a proxy in between that buffers it, say): poll instead.
      source.close();
      source = null;
      poll();
    }
  });
}

connect();
