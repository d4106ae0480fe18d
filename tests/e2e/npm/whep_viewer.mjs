// A WHEP viewer in Node on werift (WebRTC in pure TypeScript: its own ICE, DTLS, SRTP and RTP):
//   node whep_viewer.mjs URL TOKEN SECONDS > video.h264
// Receives H.264 for SECONDS and writes it to stdout as an Annex B stream (werift's own RFC 6184
// depacketizer), for the test to decode; then DELETEs its session. On stderr, one JSON line:
// what the daemon answered ({post, etag, location, packets, del}).
import {
  H264RtpPayload,
  RTCPeerConnection,
  RTCRtpCodecParameters,
  useNACK,
  usePLI,
} from "werift";
const [url, token, seconds] = process.argv.slice(2);
const auth = token ? { Authorization: `Bearer ${token}` } : {};
const report = { post: null, etag: null, location: null, packets: 0, del: null };

const pc = new RTCPeerConnection({
  iceServers: [],
  codecs: {
    video: [
      new RTCRtpCodecParameters({
        mimeType: "video/H264",
        clockRate: 90000,
        rtcpFeedback: [useNACK(), usePLI()],
        parameters: "profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1",
      }),
    ],
  },
});
const transceiver = pc.addTransceiver("video", { direction: "recvonly" });
transceiver.onTrack.subscribe((track) => {
  let fragment;
  track.onReceiveRtp.subscribe((rtp) => {
    report.packets += 1;
    const h264 = H264RtpPayload.deSerialize(rtp.payload, fragment);
    fragment = h264.fragment;
    if (h264.payload) process.stdout.write(h264.payload);
  });
});

await pc.setLocalDescription(await pc.createOffer());
const response = await fetch(url, {
  method: "POST",
  headers: { "Content-Type": "application/sdp", ...auth },
  body: pc.localDescription.sdp,
});
report.post = response.status;
report.etag = response.headers.get("etag");
const answer = await response.text();
if (response.status !== 201) {
  process.stderr.write(JSON.stringify({ ...report, body: answer }) + "\n");
  process.exit(1);
}
report.location = response.headers.get("location");
await pc.setRemoteDescription({ type: "answer", sdp: answer });
await new Promise((resolve) => setTimeout(resolve, Number(seconds) * 1000));
const deleted = await fetch(new URL(report.location, url), { method: "DELETE", headers: auth });
report.del = deleted.status;
await pc.close();
process.stderr.write(JSON.stringify(report) + "\n");
process.exit(0);
