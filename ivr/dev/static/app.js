// ivr dev softphone page: one WebSocket, JSON control messages + binary 8 kHz int16 audio.
// Counters for tests and curious humans live in data-* attributes on <body>.
"use strict";

const RATE = 8000;          // the wire rate: 8 kHz mono int16, 20 ms frames
const FRAME = 160;
const KEY_EVENTS = new Set(["routed", "transferred", "diverted", "answered", "dropped", "offer"]);
const $ = (id) => document.getElementById(id);
const data = document.body.dataset;

let ws = null;
let ctx = null;             // one AudioContext for playback and capture
let playHead = 0;           // when the next received frame starts (ctx time)
let playRes = null, micRes = null;
let callid = null;
let micOn = false, micStream = null, micNode = null, micBuf = [];
const count = { audio: 0, peak: 0, mic: 0, events: [] };

// --- linear-interpolation resampler that keeps its phase across blocks ----------------------
class Resampler {
  constructor(from, to) { this.step = from / to; this.t = 0; this.prev = 0; }
  push(input) {
    const n = input.length, out = [];
    let t = this.t;
    while (t <= n - 1) {
      const i = Math.floor(t), f = t - i;
      const a = i < 0 ? this.prev : input[i];
      const b = i + 1 < n ? input[i + 1] : a;
      out.push(a + (b - a) * f);
      t += this.step;
    }
    this.t = t - n;
    if (n) this.prev = input[n - 1];
    return Float32Array.from(out);
  }
}

// --- WebSocket ----------------------------------------------------------------------------
function connect() {
  ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => { data.ws = "open"; $("conn").textContent = "connected"; $("conn").className = "pill ok"; };
  ws.onclose = () => {
    data.ws = "closed"; $("conn").textContent = "disconnected - retrying"; $("conn").className = "pill";
    setCall(null, "idle");
    setTimeout(connect, 1000);
  };
  ws.onmessage = (ev) => (typeof ev.data === "string" ? onMessage(JSON.parse(ev.data)) : onAudio(ev.data));
}

function send(msg) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
}

function onMessage(m) {
  switch (m.type) {
    case "hello":
      $("source").textContent = `${m.source} · route point ${m.route_point}`;
      if (!$("caller").value) $("caller").value = m.caller;
      if (m.reload) showReload(m.reload);
      showPbx(m.pbx);
      break;
    case "pbx": showPbx(m); break;
    case "call_started": setCall(m.callid, "calling"); clearLive(); break;
    case "diagram": showDiagram(m); break;
    case "live": showLive(m); break;
    case "event": showEvent(m.entry); break;
    case "record":
      $("record").textContent = JSON.stringify(m.record, null, 2);
      $("record").className = "";
      data.outcome = m.record.outcome || "";
      break;
    case "call_ended": setCall(null, "ended"); break;
    case "reload": showReload(m); break;
    case "stats": data.serverAudioBytes = m.audio_bytes; data.serverMicBytes = m.mic_bytes; break;
    case "wav_queued": $("activity").textContent = `caller says a ${m.seconds} s WAV`; break;
    case "error": showError(m.message); break;
  }
}

// --- hearing the IVR ------------------------------------------------------------------------
function ensureAudio() {
  if (ctx) return ctx;
  try { ctx = new AudioContext({ sampleRate: RATE }); } catch (e) { ctx = new AudioContext(); }
  data.audioRate = ctx.sampleRate;
  if (ctx.sampleRate !== RATE) { playRes = new Resampler(RATE, ctx.sampleRate); micRes = new Resampler(ctx.sampleRate, RATE); }
  return ctx;
}

function onAudio(buf) {
  const pcm = new Int16Array(buf);
  let peak = 0;
  const f = new Float32Array(pcm.length);
  for (let i = 0; i < pcm.length; i++) { f[i] = pcm[i] / 32768; peak = Math.max(peak, Math.abs(pcm[i])); }
  count.audio += buf.byteLength;
  count.peak = Math.max(count.peak, peak);
  data.audioBytes = count.audio;
  data.audioPeak = count.peak;
  $("heard").textContent = `${(count.audio / 2 / RATE).toFixed(1)} s`;
  $("level").firstElementChild.style.width = `${Math.min(100, (peak / 16384) * 100)}%`;
  if (!ctx) return;
  const samples = playRes ? playRes.push(f) : f;
  if (!samples.length) return;
  const ab = ctx.createBuffer(1, samples.length, ctx.sampleRate);
  ab.copyToChannel(samples, 0);
  const src = ctx.createBufferSource();
  src.buffer = ab;
  src.connect(ctx.destination);
  const now = ctx.currentTime;
  // Keep 60-500 ms of buffer: enough to ride out network jitter, never a growing delay.
  if (playHead < now + 0.02 || playHead > now + 0.5) playHead = now + 0.06;
  src.start(playHead);
  playHead += ab.duration;
}

// --- the microphone -------------------------------------------------------------------------
async function toggleMic() {
  if (micOn) { stopMic(); return; }
  try {
    const c = ensureAudio();
    await c.resume();
    micStream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
    await c.audioWorklet.addModule("/static/capture-worklet.js");
    const source = c.createMediaStreamSource(micStream);
    micNode = new AudioWorkletNode(c, "ivr-capture");
    const mute = c.createGain();
    mute.gain.value = 0;  // the node must be pulled by the graph, but we do not want to hear ourselves
    source.connect(micNode).connect(mute).connect(c.destination);
    micNode.port.onmessage = (ev) => onMicBlock(ev.data);
    micOn = true;
    $("mic").textContent = "Microphone on";
    $("mic").setAttribute("aria-pressed", "true");
    data.mic = "on";
  } catch (e) {
    showError(`microphone: ${e.message || e}`);
  }
}

function stopMic() {
  if (micStream) micStream.getTracks().forEach((t) => t.stop());
  if (micNode) micNode.disconnect();
  micStream = micNode = null;
  micOn = false;
  micBuf = [];
  $("mic").textContent = "Microphone off";
  $("mic").setAttribute("aria-pressed", "false");
  data.mic = "off";
}

function onMicBlock(block) {
  const samples = micRes ? micRes.push(block) : block;
  for (let i = 0; i < samples.length; i++) micBuf.push(samples[i]);
  while (micBuf.length >= FRAME) {
    const frame = micBuf.splice(0, FRAME);
    if (callid === null || !ws || ws.readyState !== WebSocket.OPEN) continue;
    const pcm = new Int16Array(FRAME);
    for (let i = 0; i < FRAME; i++) pcm[i] = Math.max(-32768, Math.min(32767, Math.round(frame[i] * 32767)));
    ws.send(pcm.buffer);
    count.mic += pcm.byteLength;
    data.micBytes = count.mic;
    $("micsent").textContent = `${(count.mic / 2 / RATE).toFixed(1)} s`;
  }
}

// --- a WAV file as the caller's speech ------------------------------------------------------
async function sendWav() {
  const file = $("wavfile").files[0];
  if (!file) return;
  const bytes = new Uint8Array(await file.arrayBuffer());
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  send({ type: "wav", data: btoa(bin) });
}

// --- the live view --------------------------------------------------------------------------
function setCall(id, state) {
  callid = id;
  data.callState = state;
  data.callid = id === null ? "" : id;
  const active = id !== null;
  $("call").disabled = active;
  $("hangup").disabled = !active;
  $("sendwav").disabled = !active;
  document.querySelectorAll("#keypad button").forEach((b) => (b.disabled = !active));
  if (state === "ended" || state === "idle") $("state").textContent = state;
}

function clearLive() {
  for (const id of ["transcript", "events"]) $(id).replaceChildren();
  for (const id of ["steps", "vars"]) $(id).tBodies[0].replaceChildren();
  $("diagram").replaceChildren(para("(the diagram of the flow appears when a call starts)", "muted"));
  $("flowname").textContent = "";
  data.path = "";
  data.current = "";
  data.steps = "0";
  $("digits").textContent = "–";
  $("activity").textContent = "";
  $("record").textContent = "(when the IVR's part of the call ends)";
  $("record").className = "muted";
  count.events = [];
  data.events = "";
  data.transferred = "";
  data.outcome = "";
}

function showLive(m) {
  if (m.state !== undefined) {
    $("state").textContent = `${m.state}${m.location ? " at " + m.location : ""}`;
    data.emulatorState = m.state;
  } else if (m.location !== undefined) {
    $("state").textContent = `${data.emulatorState} at ${m.location}`;
  }
  if (m.activity !== undefined) { $("activity").textContent = m.activity; data.activity = m.activity; }
  if (m.vars !== undefined) showVars(m.vars);
  if (m.digits !== undefined) {
    const pressed = m.digits.filter((d) => d);
    $("digits").textContent = pressed.length ? pressed.join(", ") : "–";
    data.digits = pressed.join(",");
  }
  if (m.transcript !== undefined) {
    $("transcript").replaceChildren(...m.transcript.map((t) => li(t.text !== undefined ? `${t.role || t.speaker || ""} ${t.text}` : JSON.stringify(t))));
  }
  for (const s of m.new_steps || []) addStep(s);
  if (m.path !== undefined || m.current !== undefined) showPath(m.path, m.current);
  if (m.errors && m.errors.length) showError(m.errors.join("\n"));
}

// --- the flow diagram, steps and variables as rows -----------------------------------------
let lastPath = [], lastCurrent = null;

function showDiagram(m) {
  const box = $("diagram");
  $("flowname").textContent = m.flow ? m.flow.split("/").pop() : "";
  if (!m.svg) {
    box.replaceChildren(para("(no diagram: a Python flow's steps are its code; they are listed below)", "muted"));
    return;
  }
  // The server drew it (ivr/dev/diagram.py): SVG markup of our own, parsed, never run.
  const doc = new DOMParser().parseFromString(m.svg, "image/svg+xml");
  box.replaceChildren(document.importNode(doc.documentElement, true));
  data.diagram = "shown";
  showPath(lastPath, lastCurrent);
}

function showPath(path, current) {
  if (path !== undefined) lastPath = path;
  if (current !== undefined) lastCurrent = current;
  const svg = $("diagram").querySelector("svg");
  data.path = lastPath.join(",");
  data.current = lastCurrent || "";
  if (!svg) return;
  svg.querySelectorAll(".visited, .current, .taken").forEach((el) => el.classList.remove("visited", "current", "taken"));
  const node = (id) => svg.querySelector(`g.node[data-node="${id}"]`);
  lastPath.forEach((id, i) => {
    const n = node(id);
    if (n) n.classList.add("visited");
    if (i) {
      const e = svg.querySelector(`g.edge[data-src="${lastPath[i - 1]}"][data-dst="${id}"]`);
      if (e) e.classList.add("taken");
    }
  });
  const cur = lastCurrent && node(lastCurrent);
  if (cur) {
    cur.classList.add("current");
    data.currentLabel = cur.querySelector("title").textContent;
    scrollIntoBox(cur, $("diagram"));
  }
}

function scrollIntoBox(el, box) {
  const r = el.getBoundingClientRect(), b = box.getBoundingClientRect();
  if (r.top < b.top || r.bottom > b.bottom) box.scrollTop += r.top - b.top - b.height / 3;
  if (r.left < b.left || r.right > b.right) box.scrollLeft += r.left - b.left - b.width / 3;
}

function fmt(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : String(Number(v.toFixed(3)));
  if (typeof v === "string") return v;
  if (typeof v === "boolean") return String(v);
  return JSON.stringify(v);
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function addStep(s) {
  const tr = document.createElement("tr");
  const result = document.createElement("td");
  if (s.result !== null && typeof s.result === "object" && !Array.isArray(s.result)) {
    for (const [k, v] of Object.entries(s.result)) {
      if (v === null || v === undefined || v === "" || (Array.isArray(v) && !v.length)) continue;
      const pair = document.createElement("span");
      pair.className = "kv";
      const key = document.createElement("span");
      key.className = "k";
      key.textContent = `${k} `;
      pair.append(key, document.createTextNode(fmt(v)));
      result.append(pair);
    }
  } else if (s.result !== null && s.result !== undefined) {
    result.textContent = fmt(s.result);
  }
  tr.append(cell(`${fmt(s.at)} s`, "num"), cell(`${s.step}${s.id ? " #" + s.id : ""}`, "name"), result,
            cell(`${fmt(s.duration)} s`, "num"));
  $("steps").tBodies[0].append(tr);
  data.steps = String($("steps").tBodies[0].rows.length);
  const box = $("steps").parentElement;  // keep the newest row in view, without scrolling the page
  box.scrollTop = box.scrollHeight;
}

function showVars(vars) {
  const rows = Object.entries(vars).map(([k, v]) => {
    const tr = document.createElement("tr");
    tr.append(cell(k, "name"), cell(fmt(v)));
    return tr;
  });
  $("vars").tBodies[0].replaceChildren(...rows);
  data.vars = JSON.stringify(vars);
}

function para(text, cls) {
  const p = document.createElement("p");
  p.textContent = text;
  if (cls) p.className = cls;
  return p;
}

function showEvent(e) {
  const details = Object.entries(e).filter(([k]) => k !== "t" && k !== "event").map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`);
  const item = li(`${Number(e.t).toFixed(2).padStart(6)}  ${e.event}  ${details.join(" ")}`);
  item.dataset.event = e.event;
  if (KEY_EVENTS.has(e.event)) item.className = "key";
  $("events").append(item);
  item.scrollIntoView({ block: "nearest" });
  count.events.push(e.event);
  data.events = count.events.join(",");
  if ((e.event === "transferred" || e.event === "routed") && e.result === "answered") data.transferred = e.destination;
}

function showReload(r) {
  const el = $("reload");
  el.hidden = false;
  const name = r.file.split("/").pop();
  if (r.ok) {
    el.className = "banner";
    const warnings = r.diagnostics.map((d) => d.text).join("\n");
    el.textContent = `reloaded ${name} (version ${r.version})${warnings ? "\n" + warnings : ""}`;
  } else {
    el.className = "banner error";
    el.textContent = `${name} is invalid; new calls still get the last good version:\n` + r.diagnostics.map((d) => d.text).join("\n");
  }
  data.reload = r.ok ? "ok" : "error";
}

// --- the PBX description's people and departments (ivr dev --pbx-config) -------------------
function pbxSelect(options, value, onChange) {
  const sel = document.createElement("select");
  for (const o of options) {
    const opt = document.createElement("option");
    opt.value = o; opt.textContent = o; opt.selected = o === value;
    sel.append(opt);
  }
  sel.onchange = () => onChange(sel.value);
  return sel;
}

function pbxCell(tr, content) {
  const td = document.createElement("td");
  if (typeof content === "string") td.textContent = content; else td.append(content);
  tr.append(td);
}

function showPbx(view) {
  $("pbx").hidden = !view;
  if (!view) return;
  const users = $("pbxusers").querySelector("tbody"), depts = $("pbxdepts").querySelector("tbody");
  users.replaceChildren();
  for (const u of view.users) {
    const tr = document.createElement("tr");
    tr.dataset.number = u.number;
    if (!u.listed) tr.className = "muted";
    pbxCell(tr, u.number);
    pbxCell(tr, u.name + (u.listed ? "" : " (not listed)"));
    pbxCell(tr, pbxSelect(view.profiles, u.presence, (v) => send({ type: "pbx", user: u.number, presence: v })));
    const phone = document.createElement("input");
    phone.type = "checkbox"; phone.checked = u.registered; phone.title = "a phone is registered";
    phone.onchange = () => send({ type: "pbx", user: u.number, registered: phone.checked });
    pbxCell(tr, phone);
    users.append(tr);
  }
  depts.replaceChildren();
  for (const d of view.departments) {
    const tr = document.createElement("tr");
    tr.dataset.name = d.name;
    pbxCell(tr, d.name);
    pbxCell(tr, pbxSelect(view.modes, d.forced, (v) => send({ type: "pbx", department: d.name, forced: v })));
    depts.append(tr);
  }
}

function showError(text) {
  const el = $("errors");
  el.hidden = false;
  el.textContent = text;
  data.error = text;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => (el.hidden = true), 8000);
}

function li(text) {
  const item = document.createElement("li");
  item.textContent = text;
  return item;
}

// --- wiring ---------------------------------------------------------------------------------
$("call").onclick = async () => {
  const c = ensureAudio();
  await c.resume();  // inside the click: browsers allow audio only after a user gesture
  playHead = 0;
  send({ type: "call", caller: $("caller").value, did: $("did").value });
};
$("hangup").onclick = () => send({ type: "hangup" });
$("mic").onclick = toggleMic;
$("sendwav").onclick = sendWav;
$("wavfile").onchange = () => ($("sendwav").disabled = callid === null || !$("wavfile").files.length);
document.querySelectorAll("#keypad button").forEach((b) => (b.onclick = () => send({ type: "dtmf", digits: b.dataset.digit })));
document.addEventListener("keydown", (ev) => {
  if (ev.target.tagName === "INPUT" || callid === null || !/^[0-9*#]$/.test(ev.key)) return;
  send({ type: "dtmf", digits: ev.key });
});
setCall(null, "idle");
connect();
