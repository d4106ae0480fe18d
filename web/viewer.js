// The viewer page: plays a WHEP stream and overlays resolution, fps, bitrate, round-trip time and
// glass-to-glass latency (read from the capture-time stamp the test source draws).
// Everything it measures is also kept in `window.viewer` for tests and benchmarks.

import { WhepClient } from "./whep.js";
import { readStamp, stampLatency } from "./stamp.js";
import { bindLogin, initialToken } from "./token.js";

export function startViewer({ video, overlay, status, url, login, unmute, clock, audio = true, trickle = true }) {
  const state = {
    url,
    state: "idle",
    error: null,
    framesPresented: 0,
    width: 0,
    height: 0,
    fps: 0,
    bitrate: 0,
    rttMs: null,
    latencies: [],       // every readable stamp latency, ms (tests read this)
    latencyMs: null,     // median over the last second
    connectStartedAt: null,
    firstFrameMs: null,  // from the start of the last connection attempt to its first presented frame
    sessions: 0,
    audio: false,        // the stream has sound
    muted: true,         // browsers start playback muted; the unmute button turns it on
  };
  window.viewer = state;
  const canvas = document.createElement("canvas");
  let recent = [];

  const client = new WhepClient(url, {
    audio,
    trickle,
    token: initialToken(url),
    onState(name, error) {
      state.state = name;
      state.error = error;
      if (login) login.hidden = name !== "unauthorized";
      if (name === "connecting") {
        state.connectStartedAt = performance.now();
        state.firstFrameMs = null;
        state.sessions += 1;
      }
      render();
    },
    onTrack(stream) {
      video.srcObject = stream;
      state.audio = stream.getAudioTracks().length > 0;
      if (unmute) unmute.hidden = !state.audio;
      video.play().catch(() => {});
    },
  });

  const onFrame = (now, metadata) => {
    state.framesPresented += 1;
    state.width = metadata.width;
    state.height = metadata.height;
    if (state.firstFrameMs === null && state.connectStartedAt !== null) {
      state.firstFrameMs = now - state.connectStartedAt;
    }
    const stamp = readStamp(video, canvas);
    if (stamp !== null) {
      const presented = performance.timeOrigin + metadata.expectedDisplayTime;
      const latency = stampLatency(stamp, presented);
      if (latency < 60000) {
        state.latencies.push(latency);
        if (state.latencies.length > 10000) state.latencies.splice(0, 5000);
        recent.push(latency);
      }
    }
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);

  let last = null;
  setInterval(async () => {
    if (recent.length) {
      const sorted = recent.slice().sort((a, b) => a - b);
      state.latencyMs = sorted[Math.floor(sorted.length / 2)];
      recent = [];
    }
    const pc = client.pc;
    if (pc) {
      const report = await pc.getStats();
      report.forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "video") {
          if (last && s.timestamp > last.timestamp) {
            const dt = (s.timestamp - last.timestamp) / 1000;
            state.fps = (s.framesDecoded - last.framesDecoded) / dt;
            state.bitrate = (8 * (s.bytesReceived - last.bytesReceived)) / dt;
          }
          last = { timestamp: s.timestamp, framesDecoded: s.framesDecoded, bytesReceived: s.bytesReceived };
        } else if (s.type === "inbound-rtp" && s.kind === "audio") {
          state.audioEnergy = s.totalAudioEnergy;
          state.audioSamples = s.totalSamplesReceived;
          state.concealedSamples = s.concealedSamples;
          state.audioPackets = s.packetsReceived;
        } else if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) {
          state.rttMs = s.currentRoundTripTime * 1000;
        }
      });
    }
    render();
  }, 1000);

  function render() {
    status.textContent =
      state.state === "retrying" ? `reconnecting: ${state.error}`
      : state.state === "unauthorized" ? `this stream needs a token: ${state.error}`
      : state.state;
    status.dataset.state = state.state;
    const fmt = (v, unit, digits = 0) => (v === null || v === undefined ? "–" : `${v.toFixed(digits)} ${unit}`);
    overlay.textContent = [
      `${state.width}×${state.height}`,
      fmt(state.fps, "fps"),
      fmt(state.bitrate / 1e6, "Mbit/s", 2),
      `rtt ${fmt(state.rttMs, "ms", 1)}`,
      `latency ${fmt(state.latencyMs, "ms")}`,
    ].join("  ·  ");
  }

  if (unmute) {
    // Autoplay with sound needs a user gesture: the page starts muted and offers this button.
    unmute.addEventListener("click", () => {
      video.muted = !video.muted;
      state.muted = video.muted;
      unmute.textContent = video.muted ? "🔇 Unmute" : "🔊 Mute";
      video.play().catch(() => {});
    });
  }

  if (login) bindLogin(login, url, client);
  if (clock) watchClock(clock, url, client);

  window.viewerClient = client;
  client.start();
  return client;
}

// The device's clock, as /api/streams says (to anyone who may watch): a Pi has no battery clock,
// and until it reaches a time server the time it stamps on the picture and everything dated is
// wrong. Asked now and every 30 s; no more once refused (a token for another device), which
// would only fill the device's log with refusals.
function watchClock(element, url, client) {
  const streamsUrl = new URL("/api/streams", url).toString();
  let timer = null;
  const ask = async () => {
    try {
      const headers = client.token ? { Authorization: `Bearer ${client.token}` } : {};
      const response = await fetch(streamsUrl, { headers });
      if (response.status === 401 || response.status === 403) clearInterval(timer);
      if (!response.ok) return;
      const synchronised = (await response.json()).clock_synchronised;
      window.viewer.clockSynchronised = synchronised;
      element.hidden = synchronised !== false;
    } catch {
      // the device is restarting or unreachable: the connection state says so already
    }
  };
  timer = setInterval(ask, 30000);
  ask();
}
