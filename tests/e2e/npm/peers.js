// The browser's share of the peers, bundled by tests/run.sh into dist/peers.js (esbuild): each
// client exactly as its authors publish it on npm.
export { WebRTCPlayer } from "@eyevinn/webrtc-player";
export { WHIPClient } from "@eyevinn/whip-web-client";
export { WHEPClient } from "whip-whep/whep.js";
