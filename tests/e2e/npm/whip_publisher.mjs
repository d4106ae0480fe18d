// A WHIP publisher in Node: Eyevinn's WHIP client (@eyevinn/whip-web-client) on werift:
//   node whip_publisher.mjs URL TOKEN SECONDS
// Prints the UDP port it listens on; H.264 RTP sent there (the test's encoder) goes out through
// werift's sender (its SSRC, payload type, SRTP) to the WHIP endpoint. After SECONDS of media it
// destroy()s the client (DELETE) and prints one JSON line: what the client saw.
import dgram from "node:dgram";
import whip from "@eyevinn/whip-web-client";
import {
  MediaStream,
  MediaStreamTrack,
  RTCPeerConnection,
  RTCRtpCodecParameters,
  useNACK,
  usePLI,
} from "werift";

const { WHIPClient } = whip;
const [url, token, seconds] = process.argv.slice(2);
const h264 = new RTCRtpCodecParameters({
  mimeType: "video/H264",
  clockRate: 90000,
  rtcpFeedback: [useNACK(), usePLI()],
  parameters: "profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1",
});

const track = new MediaStreamTrack({ kind: "video" });
let forwarded = 0;
const udp = dgram.createSocket("udp4");
udp.on("message", (packet) => {
  forwarded += 1;
  track.writeRtp(packet);
});
await new Promise((resolve) => udp.bind(0, "127.0.0.1", resolve));
console.log(JSON.stringify({ port: udp.address().port }));

const client = new WHIPClient({
  endpoint: url,
  opts: { authkey: token, iceServers: [], timeout: 2000 },
  peerConnectionFactory: (config) =>
    new RTCPeerConnection({ ...config, codecs: { video: [h264], audio: [] } }),
});
await client.ingest(new MediaStream([track]));
const resource = await client.getResourceUrl();
await new Promise((resolve) => setTimeout(resolve, Number(seconds) * 1000));
const state = client.getICEConnectionState();
await client.destroy();
udp.close();
console.log(JSON.stringify({ resource, state, forwarded, etag: client.eTag }));
process.exit(0);
