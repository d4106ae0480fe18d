// A small WHEP client (draft-ietf-wish-whep): recvonly offer, trickle ICE, reconnects with backoff.
//
//   const client = new WhepClient(url, { onTrack, onState });
//   client.start();      // connects, and reconnects after a daemon restart or a network drop
//   client.stop();       // DELETEs the session (also sent on page unload)
//
// States: "idle" → "connecting" → "connected" → ("retrying" → "connecting" …) → "stopped";
// "unauthorized" when the endpoint wants a (different) bearer token: no retry until setToken().
//
// SessionClient is what WHEP and WHIP (whip.js) share: ask the endpoint for its ICE servers
// (OPTIONS, `Link: <turn:…>; rel="ice-server"`, RFC 9725 section 4.6), POST the offer at once,
// trickle the candidates gathered meanwhile and after with PATCH (RFC 8840 sdpfrags), apply the
// answer, DELETE the session resource, retry with backoff. A subclass adds its media in
// _prepare(pc).

// `Link` header values (fetch joins several headers with ", ") → RTCIceServer objects, for
// rel="ice-server" only. Parameter values may be quoted strings.
export function parseIceServerLinks(header) {
  const servers = [];
  if (!header) return servers;
  const link = /<([^>]*)>((?:\s*;\s*[^=;,\s]+\s*(?:=\s*(?:"(?:[^"\\]|\\.)*"|[^;,]*))?)*)/g;
  const param = /;\s*([^=;,\s]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^;,]*))?/g;
  for (const [, url, rest] of header.matchAll(link)) {
    const params = {};
    for (const [, name, raw = ""] of rest.matchAll(param)) {
      const value = raw.trim();
      params[name.toLowerCase()] =
        value.startsWith('"') ? value.slice(1, -1).replace(/\\(.)/g, "$1") : value;
    }
    if (params.rel !== "ice-server") continue;
    const server = { urls: url };
    if (params.username !== undefined) server.username = params.username;
    if (params.credential !== undefined) server.credential = params.credential;
    servers.push(server);
  }
  return servers;
}

// An RFC 8840 sdpfrag for trickled candidates (null: end of candidates) of `description`.
export function sdpFragment(description, candidates) {
  const ufrag = /^a=ice-ufrag:(.*)$/m.exec(description)?.[1]?.trim();
  const pwd = /^a=ice-pwd:(.*)$/m.exec(description)?.[1]?.trim();
  const lines = [`a=ice-ufrag:${ufrag}`, `a=ice-pwd:${pwd}`];
  const byMid = new Map();
  for (const candidate of candidates) {
    const mid = candidate ? candidate.sdpMid : null;
    if (!byMid.has(mid)) byMid.set(mid, []);
    byMid.get(mid).push(candidate ? `a=${candidate.candidate}` : "a=end-of-candidates");
  }
  for (const [mid, media] of byMid) {
    lines.push("m=audio 9 UDP/TLS/RTP/SAVPF 0");
    if (mid !== null && mid !== undefined) lines.push(`a=mid:${mid}`);
    lines.push(...media);
  }
  return lines.join("\r\n") + "\r\n";
}

function gathered(pc) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
  });
}

// How long a connection may stay "disconnected" (no packets answered for a few seconds) before
// the client gives it up and offers again.
const DISCONNECTED_GRACE_MS = 500;

export class SessionClient {
  // `trickle: false` waits for ICE gathering to finish and POSTs every candidate in the offer
  // (for endpoints that take no PATCH, and to measure what trickling saves).
  constructor(url, protocol, { onState = () => {}, iceServers = [], token = null, trickle = true } = {}) {
    this.url = url;
    this.protocol = protocol;
    this.onState = onState;
    this.iceServers = iceServers;
    this.token = token;
    this.trickle = trickle;
    this.state = "idle";
    this.pc = null;
    this.resource = null;
    this.retries = 0;
    this.timer = null;
    this.lastError = null;
    this._unload = () => this._deleteResource(true);
  }

  start() {
    window.addEventListener("pagehide", this._unload);
    this._connect();
  }

  async stop() {
    window.removeEventListener("pagehide", this._unload);
    clearTimeout(this.timer);
    this._setState("stopped");
    this._closePc();
    await this._deleteResource(false);
  }

  setToken(token) {
    this.token = token;
    if (this.state === "unauthorized") {
      this.retries = 0;
      this._connect();
    }
  }

  _setState(state, error = null) {
    this.state = state;
    this.lastError = error;
    this.onState(state, error);
  }

  async _connect() {
    if (this.state === "stopped") return;
    this._setState("connecting");
    const offered = await this._offeredServers();
    if (this.state !== "connecting") return;  // stopped, or a newer attempt began meanwhile
    const pc = new RTCPeerConnection({ iceServers: [...this.iceServers, ...offered] });
    this.pc = pc;
    this.iceErrors = [];
    this._prepare(pc);
    let session = null;     // { resource, etag } once the POST is answered
    const early = [];       // candidates gathered before that
    pc.onicecandidate = (event) => {
      if (pc !== this.pc) return;
      if (session) this._trickle(pc, session, [event.candidate]);
      else early.push(event.candidate);
    };
    // TURN refusals (an expired or wrong credential: 401) and unreachable servers: shown when
    // the connection fails, since nothing else tells a viewer why no relay was used.
    pc.onicecandidateerror = (event) => {
      if (pc !== this.pc || !event.url) return;
      this.iceErrors.push(`${event.url}: ${event.errorCode} ${event.errorText}`.trim());
    };
    pc.onconnectionstatechange = () => {
      if (pc !== this.pc) return;
      if (pc.connectionState === "connected") {
        this.retries = 0;
        this._setState("connected");
      } else if (pc.connectionState === "failed" || pc.connectionState === "closed") {
        const why = this.iceErrors.length ? `: ${[...new Set(this.iceErrors)].join("; ")}` : "";
        this._retry(`connection ${pc.connectionState}${why}`);
      } else if (pc.connectionState === "disconnected") {
        // ICE may recover by itself (a moment without packets); if not, start over at once
        // with a new offer: the video element keeps its last picture meanwhile.
        clearTimeout(this.timer);
        this.timer = setTimeout(() => {
          if (pc === this.pc && pc.connectionState === "disconnected") this._retry("connection lost", 0);
        }, DISCONNECTED_GRACE_MS);
      }
    };
    try {
      await pc.setLocalDescription(await pc.createOffer());
      if (!this.trickle) await gathered(pc);
      const offer = pc.localDescription.sdp;
      const response = await fetch(this.url, {
        method: "POST",
        headers: { "Content-Type": "application/sdp", ...this._auth() },
        body: offer,
      });
      if (response.status === 401 || response.status === 403) {
        const reason = (await response.text()).trim();
        if (pc === this.pc) {
          this._closePc();
          this._setState("unauthorized", reason);
        }
        return;
      }
      if (response.status !== 201) {
        const reason = (await response.text()).trim();
        throw new Error(`${this.protocol} POST answered ${response.status}: ${reason}`);
      }
      const location = response.headers.get("Location");
      this.resource = location ? new URL(location, this.url).toString() : null;
      const answer = await response.text();
      if (pc !== this.pc) return;
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
      if (this.trickle && this.resource && pc === this.pc) {
        session = { resource: this.resource, etag: response.headers.get("ETag") };
        // What the offer already carried need not be sent again.
        const fresh = early.filter((c) => !c || !offer.includes(c.candidate));
        if (fresh.length) this._trickle(pc, session, fresh);
      }
    } catch (error) {
      if (pc === this.pc) this._retry(String(error.message || error));
    }
  }

  // The ICE servers the endpoint lists for us (our token's right), before the offer: relay
  // candidates are then gathered while the offer is on its way. None when it lists none or
  // cannot be asked (the POST still works, with host candidates).
  async _offeredServers() {
    try {
      const response = await fetch(this.url, { method: "OPTIONS", headers: this._auth() });
      return parseIceServerLinks(response.headers.get("Link"));
    } catch (_) {
      return [];
    }
  }

  // PATCH candidates to the session, in the order they were gathered.
  _trickle(pc, session, candidates) {
    const body = sdpFragment(pc.localDescription.sdp, candidates);
    const headers = { "Content-Type": "application/trickle-ice-sdpfrag", ...this._auth() };
    if (session.etag) headers["If-Match"] = session.etag;
    this.trickled = (this.trickled || Promise.resolve()).then(async () => {
      if (pc !== this.pc) return;
      try {
        await fetch(session.resource, { method: "PATCH", headers, body });
      } catch (_) {
        // the session is gone or unreachable: the connection state will say so
      }
    });
  }

  _auth() {
    return this.token ? { Authorization: `Bearer ${this.token}` } : {};
  }

  _retry(reason, delay = Math.min(10000, 500 * 2 ** Math.min(this.retries, 5))) {
    if (this.state === "stopped") return;
    clearTimeout(this.timer);
    this._closePc();
    this._deleteResource(false);
    this.retries += 1;
    this._setState("retrying", reason);
    this.timer = setTimeout(() => this._connect(), delay);
  }

  _closePc() {
    if (this.pc) {
      const pc = this.pc;
      this.pc = null;
      pc.close();
    }
  }

  async _deleteResource(unloading) {
    const resource = this.resource;
    this.resource = null;
    if (!resource) return;
    const headers = this._auth();
    try {
      await fetch(resource, { method: "DELETE", headers, keepalive: unloading });
    } catch (_) {
      // the daemon may be gone; its session will time out by itself
    }
  }
}

// `audio: false` asks for the picture only: the daemon then sends it with playout-delay 0/0, so
// the browser shows each frame at once instead of holding it back to match its audio buffer
// (37 ms less glass-to-glass, measured by tests/perf/bench_relay.py: 26 ms against 63 ms).
export class WhepClient extends SessionClient {
  constructor(url, { onTrack = () => {}, audio = true, ...options } = {}) {
    super(url, "WHEP", options);
    this.onTrack = onTrack;
    this.audio = audio;
  }

  _prepare(pc) {
    pc.addTransceiver("video", { direction: "recvonly" });
    if (this.audio) pc.addTransceiver("audio", { direction: "recvonly" });
    pc.ontrack = (event) => this.onTrack(event.streams[0] || new MediaStream([event.track]), event);
  }
}
