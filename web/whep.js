// A small WHEP client (draft-ietf-wish-whep): recvonly offer, trickle-free, reconnects with backoff.
//
//   const client = new WhepClient(url, { onTrack, onState });
//   client.start();      // connects, and reconnects after a daemon restart or a network drop
//   client.stop();       // DELETEs the session (also sent on page unload)
//
// States: "idle" → "connecting" → "connected" → ("retrying" → "connecting" …) → "stopped";
// "unauthorized" when the endpoint wants a (different) bearer token: no retry until setToken().
//
// SessionClient is what WHEP and WHIP (whip.js) share: POST the offer, apply the answer, DELETE
// the session resource, retry with backoff. A subclass adds its media in _prepare(pc).

export class SessionClient {
  constructor(url, protocol, { onState = () => {}, iceServers = [], token = null } = {}) {
    this.url = url;
    this.protocol = protocol;
    this.onState = onState;
    this.iceServers = iceServers;
    this.token = token;
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
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.pc = pc;
    this._prepare(pc);
    pc.onconnectionstatechange = () => {
      if (pc !== this.pc) return;
      if (pc.connectionState === "connected") {
        this.retries = 0;
        this._setState("connected");
      } else if (pc.connectionState === "failed" || pc.connectionState === "closed") {
        this._retry(`connection ${pc.connectionState}`);
      } else if (pc.connectionState === "disconnected") {
        // ICE may recover by itself; give it a moment before starting over.
        clearTimeout(this.timer);
        this.timer = setTimeout(() => {
          if (pc === this.pc && pc.connectionState === "disconnected") this._retry("connection lost");
        }, 3000);
      }
    };
    try {
      await pc.setLocalDescription(await pc.createOffer());
      const headers = { "Content-Type": "application/sdp" };
      if (this.token) headers.Authorization = `Bearer ${this.token}`;
      const response = await fetch(this.url, { method: "POST", headers, body: pc.localDescription.sdp });
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
    } catch (error) {
      if (pc === this.pc) this._retry(String(error.message || error));
    }
  }

  _retry(reason) {
    if (this.state === "stopped") return;
    clearTimeout(this.timer);
    this._closePc();
    this._deleteResource(false);
    const delay = Math.min(10000, 500 * 2 ** Math.min(this.retries, 5));
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
    const headers = this.token ? { Authorization: `Bearer ${this.token}` } : {};
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
