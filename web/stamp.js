// Reads the capture-time stamp (shared/LATENCY_STAMP.md) from a video frame.
// Returns milliseconds of the Unix epoch modulo 2^32, or null when the stamp is unreadable.

export function readStamp(video, canvas) {
  const width = video.videoWidth;
  if (!width) return null;
  const b = Math.max(8, Math.floor(width / 80));
  canvas.width = 32 * b;
  canvas.height = 2 * b;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(video, 0, 0, 32 * b, 2 * b, 0, 0, 32 * b, 2 * b);
  const pixels = ctx.getImageData(0, 0, 32 * b, 2 * b).data;
  const q = Math.max(1, Math.floor(b / 4));
  const mean = (x0, y0) => {
    let sum = 0;
    let n = 0;
    for (let y = y0 + q; y < y0 + b - q; y++) {
      for (let x = x0 + q; x < x0 + q + Math.floor(b / 2); x++) {
        const i = (y * 32 * b + x) * 4;
        sum += (pixels[i] + pixels[i + 1] + pixels[i + 2]) / 3;
        n++;
      }
    }
    return sum / n;
  };
  let value = 0;
  for (let i = 0; i < 32; i++) {
    const row1 = mean(i * b, 0);
    const row2 = mean(i * b, b);
    if (Math.abs(row1 - row2) < 255 / 4) return null;
    value = value * 2 + (row1 > row2 ? 1 : 0);
  }
  return value;
}

// Latency in ms of a frame presented at `presentedMs` (Unix ms) that carries `stamp`.
export function stampLatency(stamp, presentedMs) {
  const now = Math.floor(presentedMs) % 4294967296;
  return (now - stamp + 4294967296) % 4294967296;
}
