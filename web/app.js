// The device's pages: the home page (every stream, with a picture, its state and a link) and a
// stream's page (the player, fullscreen, snapshot, the URLs to copy, and for an admin the
// camera's controls and the device's health). No framework: the DOM, fetch and the daemon's API
// (/api/streams, /api/controls, /api/health). Everything shown is also kept in `window.page`
// for tests.

import { startViewer } from "./viewer.js";
import { initialToken } from "./token.js";

const SNAPSHOT_EVERY_MS = 5000; // the home page's pictures
const HEALTH_EVERY_MS = 10000;
const STREAMS_EVERY_MS = 5000;

const $ = (id) => document.getElementById(id);

// An element: el("div", {class: "x", onclick: f}, child, "text", ...).
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

const page = {
  view: null, // "home" or "stream"
  stream: null, // the stream's name on its page
  admin: false,
  streams: null, // /api/streams's list, once read
  controls: [], // the camera's controls as last read or set
  controlErrors: {}, // the daemon's reason per control, for the last refused change
  health: null,
  snapshots: 0,
  lastSnapshot: null,
  errors: [],
};
window.page = page;

export async function startPage() {
  const params = new URLSearchParams(location.search);
  const whep = params.get("url");
  const device = params.get("device") || (whep ? new URL(whep).origin : location.origin);
  const api = (path) => new URL(path, device).toString();
  initialToken(null); // a #token=... fragment, kept for this tab
  const token = () => initialToken(null);
  const auth = () => (token() ? { Authorization: `Bearer ${token()}` } : {});
  const ctx = { params, device, api, auth, whep };

  const parts = location.pathname.split("/").filter(Boolean);
  if (parts.length || whep) return showStream(ctx, parts[0] || null);
  const listed = await listStreams(ctx);
  if (listed === null) return showStream(ctx, null); // refused: the player asks for a token
  if (listed.streams.length === 1) return showStream(ctx, listed.streams[0].name);
  return showHome(ctx);
}

async function listStreams(ctx) {
  try {
    const response = await fetch(ctx.api("/api/streams"), { headers: ctx.auth() });
    if (!response.ok) return null;
    const listed = await response.json();
    page.streams = listed.streams;
    page.admin = listed.admin;
    return listed;
  } catch (error) {
    page.errors.push(String(error));
    return null;
  }
}

// --- The home page -------------------------------------------------------------------------

function streamLink(ctx, name) {
  const query = ctx.device !== location.origin ? `?device=${encodeURIComponent(ctx.device)}` : "";
  return `/${encodeURIComponent(name)}/${query}`;
}

function showHome(ctx) {
  page.view = "home";
  $("home").hidden = false;
  document.title = "appliance";
  const cards = new Map();

  const render = () => {
    $("empty").hidden = page.streams.length > 0;
    for (const stream of page.streams) {
      let card = cards.get(stream.name);
      if (!card) {
        card = {
          img: el("img", { alt: `${stream.name}, newest picture` }),
          note: el("span"),
          badge: el("span", { class: "badge" }),
          facts: el("span", { class: "facts" }),
          why: el("span", { class: "why" }),
          url: null,
        };
        card.picture = el("div", { class: "picture" }, card.note);
        card.node = el(
          "a",
          { class: "card", href: streamLink(ctx, stream.name), "data-stream": stream.name },
          card.picture,
          el("div", { class: "about" }, el("span", { class: "name" }, stream.name), card.badge, card.facts, card.why),
        );
        cards.set(stream.name, card);
        $("cards").append(card.node);
      }
      card.stream = stream;
      card.badge.className = `badge ${stream.state}`;
      card.badge.textContent = stream.state;
      const size = stream.width && stream.state === "live" ? `${stream.width}×${stream.height} · ` : "";
      card.facts.textContent =
        `${size}${(stream.fps || 0).toFixed(0)} fps · ${((stream.bitrate || 0) / 1e6).toFixed(2)} Mbit/s · ` +
        `${stream.viewers} watching`;
      card.why.textContent = stream.state === "live" ? "" : stream.why;
      if (stream.state !== "live" && !card.url) {
        card.note.textContent = stream.state === "starting" ? "starting…" : "no picture";
      }
    }
    for (const [name, card] of cards) {
      if (!page.streams.some((s) => s.name === name)) {
        card.node.remove(); // a published stream that ended
        if (card.url) URL.revokeObjectURL(card.url);
        cards.delete(name);
      }
    }
  };

  // The pictures: a snapshot per live stream every few seconds (cheap for the device: one JPEG
  // of the newest keyframe per stream), fetched with the token, shown as a blob.
  const pictures = async () => {
    await Promise.all(
      [...cards.values()]
        .filter((card) => card.stream.state === "live")
        .map(async (card) => {
          try {
            const response = await fetch(ctx.api(card.stream.urls.snapshot), { headers: ctx.auth() });
            if (!response.ok) return;
            const url = URL.createObjectURL(await response.blob());
            card.img.onload = () => {
              if (card.previous) URL.revokeObjectURL(card.previous);
              card.previous = card.url;
            };
            card.img.src = card.url = url;
            if (!card.img.isConnected) card.picture.replaceChildren(card.img);
            page.snapshots += 1;
          } catch (error) {
            page.errors.push(String(error));
          }
        }),
    );
  };

  render();
  pictures();
  setInterval(async () => {
    if (document.hidden) return; // a background tab costs the device nothing
    if (await listStreams(ctx)) render();
  }, STREAMS_EVERY_MS);
  setInterval(() => document.hidden || pictures(), SNAPSHOT_EVERY_MS);
  if (page.admin) watchHealth(ctx, null);
}

// --- A stream's page -------------------------------------------------------------------------

function showStream(ctx, name) {
  page.view = "stream";
  page.stream = name;
  $("watch").hidden = false;
  $("title").textContent = name || "";
  if (name) document.title = `${name} · appliance`;
  const url = ctx.whep || ctx.api(name ? `/${encodeURIComponent(name)}/whep` : "/whep");
  const overlay = $("overlay");
  overlay.hidden = ctx.params.get("stats") !== "1";
  const client = startViewer({
    video: $("video"),
    overlay,
    status: $("status"),
    login: $("login"),
    unmute: $("unmute"),
    clock: $("clock"),
    audio: ctx.params.get("audio") !== "0",
    trickle: ctx.params.get("trickle") !== "0",
    url,
  });

  $("stats").addEventListener("click", () => (overlay.hidden = !overlay.hidden));
  $("fullscreen").addEventListener("click", async () => {
    try {
      if (document.fullscreenElement) await document.exitFullscreen();
      else await $("stage").requestFullscreen();
    } catch (error) {
      page.errors.push(`fullscreen: ${error}`);
    }
  });
  document.addEventListener("fullscreenchange", () => {
    $("fullscreen").textContent = document.fullscreenElement ? "Exit fullscreen" : "Fullscreen";
  });
  $("snapshot").addEventListener("click", () => snapshot(ctx, client));

  // What the page knows of the stream (its links; controls and health for an admin) comes from
  // /api/streams: asked now, and again once the player has a token that was wanted.
  let known = false;
  const learn = async () => {
    if (known) return;
    const listed = await listStreams(ctx);
    if (!listed) return;
    known = true;
    const stream = listed.streams.find((s) => s.name === name) || (name ? null : listed.streams[0]);
    if (!name && stream) {
      page.stream = name = stream.name;
      $("title").textContent = name;
    }
    showLinks(ctx, stream, url);
    if (listed.admin && stream && stream.origin === "camera") showControls(ctx, name);
    if (listed.admin) watchHealth(ctx, $("health"));
  };
  learn();
  const watchState = setInterval(() => {
    if (known) clearInterval(watchState);
    else if (window.viewer && window.viewer.state === "connected") learn();
  }, 1000);
}

async function snapshot(ctx, client) {
  const name = page.stream;
  if (!name) return;
  const token = client.token || initialToken(null);
  try {
    const response = await fetch(ctx.api(`/${encodeURIComponent(name)}/snapshot.jpg`), {
      headers: token ? { Authorization: `Bearer ${token}` } : {},
    });
    page.lastSnapshot = { status: response.status, type: response.headers.get("Content-Type") };
    if (!response.ok) {
      $("status").textContent = `snapshot: ${response.status} ${(await response.text()).trim()}`;
      $("status").dataset.state = "error";
      return;
    }
    const blob = await response.blob();
    const stamp = new Date().toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15);
    const link = el("a", { href: URL.createObjectURL(blob), download: `${name}-${stamp}.jpg` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    page.snapshots += 1;
    page.lastSnapshot.bytes = blob.size;
  } catch (error) {
    page.errors.push(`snapshot: ${error}`);
  }
}

function showLinks(ctx, stream, whep) {
  const rows = $("link-rows");
  const absolute = (path) => (path ? new URL(path, ctx.device).toString() : null);
  const links = [
    ["WHEP", whep, "for OBS, GStreamer's whepsrc, another WebRTC player"],
    ["RTSP", stream && stream.urls.rtsp, "for VLC, ffplay, an NVR"],
    ["Snapshot", stream && absolute(stream.urls.snapshot), "the newest picture as JPEG"],
    ["This page", stream && absolute(stream.urls.page), "to share (a token is not included)"],
  ];
  rows.replaceChildren(
    ...links
      .filter(([, value]) => value)
      .map(([label, value, hint]) => {
        const input = el("input", { readonly: true, value, "aria-label": `${label} URL`, title: hint });
        const copy = el("button", { type: "button", "data-copy": label }, "Copy");
        copy.addEventListener("click", async () => {
          input.select();
          try {
            await navigator.clipboard.writeText(value); // a secure context (HTTPS, localhost)
          } catch {
            document.execCommand("copy"); // plain HTTP from another machine
          }
          copy.textContent = "Copied";
          setTimeout(() => (copy.textContent = "Copy"), 1500);
        });
        return el("div", { class: "row" }, el("span", {}, label), input, copy);
      }),
  );
}

// --- Camera controls (admin) -----------------------------------------------------------------

function showControls(ctx, name) {
  const section = $("controls");
  const list = $("control-list");
  const endpoint = ctx.api(`/api/controls?camera=${encodeURIComponent(name)}`);
  const rows = new Map();

  const patch = async (control, value) => {
    const response = await fetch(endpoint, {
      method: "PATCH",
      headers: { ...ctx.auth(), "Content-Type": "application/json" },
      body: JSON.stringify({ [control]: value }),
    });
    const body = await response.json().catch(() => ({}));
    if (response.ok) {
      delete page.controlErrors[control];
      update(body.controls);
    } else {
      page.controlErrors[control] = body.error || `${response.status}`;
      update(page.controls); // back to what the camera has
    }
    const row = rows.get(control);
    if (row) row.error.textContent = page.controlErrors[control] || "";
  };

  const build = (control) => {
    const id = `control-${control.name}`;
    const label = el("label", { for: id }, control.name.replace(/_/g, " "));
    const error = el("span", { class: "error", role: "alert" });
    let inputs;
    if (control.type === "int" || control.type === "float") {
      const range = el("input", { id, type: "range", min: control.min, max: control.max, step: control.step || "any" });
      const number = el("input", { type: "number", step: control.step || "any", "aria-label": `${control.name} value` });
      range.addEventListener("input", () => (number.value = range.value));
      range.addEventListener("change", () => patch(control.name, Number(range.value)));
      number.addEventListener("change", () => patch(control.name, Number(number.value)));
      inputs = { set: (v) => { range.value = v; number.value = v; }, nodes: [range, number], all: [range, number] };
    } else if (control.type === "bool") {
      const box = el("input", { id, type: "checkbox" });
      box.addEventListener("change", () => patch(control.name, box.checked));
      inputs = { set: (v) => (box.checked = Boolean(v)), nodes: [box, el("span")], all: [box] };
    } else if (control.type === "menu") {
      const select = el("select", { id },
        ...Object.entries(control.menu || {}).map(([key, text]) => el("option", { value: key }, text)));
      select.addEventListener("change", () => patch(control.name, Number(select.value)));
      inputs = { set: (v) => (select.value = String(v)), nodes: [select, el("span")], all: [select] };
    } else {
      const button = el("button", { id, type: "button" }, "Press");
      button.addEventListener("click", () => patch(control.name, true));
      inputs = { set: () => {}, nodes: [button, el("span")], all: [button] };
    }
    const node = el("div", { class: "control", "data-control": control.name }, label, ...inputs.nodes, error);
    return { node, error, inputs };
  };

  const update = (controls) => {
    page.controls = controls;
    for (const control of controls) {
      let row = rows.get(control.name);
      if (!row) {
        row = build(control);
        rows.set(control.name, row);
        list.append(row.node);
      }
      if (control.value !== null && control.value !== undefined) row.inputs.set(control.value);
      const disabled = Boolean(control.read_only || control.inactive);
      for (const input of row.inputs.all) input.disabled = disabled;
      row.node.classList.toggle("inactive", Boolean(control.inactive));
      row.node.title = control.inactive ? "inactive: another control decides this now" : "";
    }
  };

  const load = async () => {
    const response = await fetch(endpoint, { headers: ctx.auth() });
    const body = await response.json().catch(() => ({}));
    if (response.ok) {
      section.hidden = body.controls.length === 0;
      update(body.controls);
      list.querySelector(".waiting")?.remove();
    } else if (response.status === 503) {
      section.hidden = false; // the camera is restarting: say so, and ask again
      if (!list.querySelector(".waiting")) list.append(el("p", { class: "waiting" }, body.error || "camera not running"));
      setTimeout(load, 5000);
    }
  };
  load();
}

// --- Device health (admin) -------------------------------------------------------------------

const THROTTLE_ADVICE = {
  under_voltage: "under-voltage: the power supply or its cable cannot keep up (use the official supply)",
  frequency_capped: "the CPU's clock was capped (heat or power)",
  throttled: "throttled: the CPU was slowed down (heat or power)",
  soft_temperature_limit: "soft temperature limit: the board runs hot (a heatsink or a fan helps)",
};

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600), m = Math.floor((seconds % 3600) / 60);
  return d ? `${d} d ${h} h` : h ? `${h} h ${m} min` : `${m} min ${Math.floor(seconds % 60)} s`;
}

const mib = (bytes) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;
const gib = (bytes) => `${(bytes / 2 ** 30).toFixed(1)} GiB`;

function watchHealth(ctx, section) {
  const badge = $("health-badge");
  const body = $("health-body");
  if (section) section.hidden = false;
  const ask = async () => {
    if (document.hidden) return;
    try {
      const response = await fetch(ctx.api("/api/health"), { headers: ctx.auth() });
      if (!response.ok) return;
      const h = (page.health = await response.json());
      const hottest = Math.max(...h.temperatures.map((t) => t.celsius), -Infinity);
      const throttled = h.throttling ? [...new Set([...h.throttling.now, ...h.throttling.since_boot])] : [];
      badge.hidden = false;
      badge.className = `badge ${throttled.length || hottest >= 80 ? "alert" : ""}`;
      badge.textContent = [
        Number.isFinite(hottest) ? `${hottest.toFixed(0)} °C` : null,
        h.load ? `load ${h.load[0].toFixed(2)}` : null,
        throttled.length ? "throttled" : null,
      ].filter(Boolean).join(" · ") || "health";
      badge.title = "Device health";
      const facts = [
        ["Up", `${duration(h.uptime_s)} (the daemon ${duration(h.daemon_uptime_s)})`],
        ["Load", h.load ? `${h.load.map((x) => x.toFixed(2)).join(" ")} on ${h.cpus} CPUs` : "–"],
        ...h.temperatures.map((t) => [t.zone, `${t.celsius.toFixed(1)} °C`, t.celsius >= 80]),
        ...(h.throttling
          ? [["Power & heat", throttled.length ? throttled.map((f) => THROTTLE_ADVICE[f] || f).join("; ") : "no throttling, no under-voltage since boot", throttled.length > 0]]
          : []),
        ["Memory", h.memory ? `${mib(h.memory.available)} free of ${mib(h.memory.total)}; the daemon ${mib(h.memory.daemon_rss || 0)}` : "–"],
        ["Disk", h.disk ? `${gib(h.disk.free)} free of ${gib(h.disk.total)}` : "–"],
      ];
      const table = el("div", { class: "facts-table" });
      for (const [name, value, bad] of facts) table.append(el("span", {}, name), el("span", { class: bad ? "bad" : "" }, value));
      const warnings = el("ul", { id: "warnings" },
        ...h.warnings.slice().reverse().slice(0, 10).map((w) =>
          el("li", { class: w.level }, `${new Date(w.time * 1000).toLocaleTimeString()} ${w.message}`)));
      body.replaceChildren(table, h.warnings.length ? el("p", {}, "Recent warnings:") : el("p", {}, "No warnings."), warnings);
    } catch (error) {
      page.errors.push(`health: ${error}`);
    }
  };
  ask();
  setInterval(ask, HEALTH_EVERY_MS);
}
