// A small WHIP client (RFC 9725): publishes a camera's video track, H.264 preferred (the daemon
// takes H.264 and passes it to its viewers without transcoding), and its microphone (Opus), and
// reconnects with backoff.
//
//   const client = new WhipClient(url, mediaStream, { onState, token });
//   client.start();  client.stop();
//
// States as WhepClient's (whep.js).

import { SessionClient } from "./whep.js";

// H.264, packetization-mode 1, Constrained Baseline first (what every viewer decodes), then the
// other H.264 formats, then retransmission; nothing else.
export function h264First(codecs) {
  const h264 = codecs.filter(
    (c) => c.mimeType.toLowerCase() === "video/h264" && /packetization-mode=1/.test(c.sdpFmtpLine || ""),
  );
  const rank = (c) => (/profile-level-id=42e0/.test(c.sdpFmtpLine) ? 0 : 1);
  h264.sort((a, b) => rank(a) - rank(b));
  return [...h264, ...codecs.filter((c) => c.mimeType.toLowerCase() === "video/rtx")];
}

export class WhipClient extends SessionClient {
  constructor(url, mediaStream, options = {}) {
    super(url, "WHIP", options);
    this.mediaStream = mediaStream;
  }

  _prepare(pc) {
    const codecs = h264First(RTCRtpSender.getCapabilities("video").codecs);
    for (const track of this.mediaStream.getVideoTracks()) {
      const transceiver = pc.addTransceiver(track, { direction: "sendonly", streams: [this.mediaStream] });
      if (codecs.length) transceiver.setCodecPreferences(codecs);
    }
    for (const track of this.mediaStream.getAudioTracks()) {
      pc.addTransceiver(track, { direction: "sendonly", streams: [this.mediaStream] });
    }
  }
}
