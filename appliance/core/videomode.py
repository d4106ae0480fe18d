"""Capture modes: what a camera offers, and which offer serves the configured picture.

Core module (no I/O): the V4L2 backend reads a device's formats, frame sizes and frame intervals into
`FormatOffer`s, and `choose_mode` picks one, or refuses with a message listing everything the
device offers, so that a user can correct the config from the log line alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from appliance.core.errors import DeviceError

# Pixel formats by what the daemon does with them: passed through, decoded, or encoded as they are.
PASSTHROUGH_FORMATS = ("H264",)
COMPRESSED_FORMATS = ("MJPG", "JPEG")
# Raw formats PyAV can read, with the PyAV (FFmpeg) name of each.
RAW_FORMATS = {
    "YU12": "yuv420p",
    "NV12": "nv12",
    "NV21": "nv21",
    "YUYV": "yuyv422",
    "UYVY": "uyvy422",
    "YVYU": "yvyu422",
    "RGB3": "rgb24",
    "BGR3": "bgr24",
    "GREY": "gray",
}
# "auto" prefers what costs the least CPU: the camera's own H.264, then raw pictures (no decode),
# then MJPEG (a JPEG decode per frame before the encode).
AUTO_PREFERENCE = ("H264", "YU12", "NV12", "YUYV", "UYVY", "NV21", "YVYU", "MJPG", "JPEG")


def fourcc(code: str) -> int:
    """The V4L2 pixel format number of a four-character code ("YUYV")."""
    raw = code.encode("ascii").ljust(4)
    if len(raw) != 4:
        raise ValueError(f"a fourcc has four characters: {code!r}")
    return int.from_bytes(raw, "little")


def fourcc_text(value: int) -> str:
    """The four-character code of a V4L2 pixel format number, trailing spaces removed."""
    return value.to_bytes(4, "little").decode("ascii", "replace").rstrip()


@dataclass(frozen=True, slots=True)
class SizeOffer:
    """Frame sizes a format offers: one size (discrete), or a stepwise or continuous range."""

    width: int
    height: int
    max_width: int = 0  # non-zero for a range: width..max_width by step_width
    max_height: int = 0
    step_width: int = 1
    step_height: int = 1
    fps: tuple[Fraction, ...] = ()  # frame rates offered at this size; empty when unknown

    def fits(self, width: int, height: int) -> bool:
        if not self.max_width:
            return (width, height) == (self.width, self.height)
        return (
            self.width <= width <= self.max_width
            and self.height <= height <= self.max_height
            and (width - self.width) % max(1, self.step_width) == 0
            and (height - self.height) % max(1, self.step_height) == 0
        )

    def describe(self) -> str:
        if self.max_width:
            size = f"{self.width}x{self.height}..{self.max_width}x{self.max_height}"
        else:
            size = f"{self.width}x{self.height}"
        if self.fps:
            rates = "/".join(_fps_text(f) for f in sorted(set(self.fps), reverse=True))
            return f"{size}@{rates}"
        return size


@dataclass(frozen=True, slots=True)
class FormatOffer:
    pixel_format: str  # fourcc text: "YUYV", "MJPG", "H264", ...
    description: str = ""
    sizes: tuple[SizeOffer, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        sizes = ", ".join(s.describe() for s in self.sizes) or "no sizes listed"
        return f"{self.pixel_format} ({sizes})"


@dataclass(frozen=True, slots=True)
class Mode:
    """The mode to ask the device for."""

    pixel_format: str
    width: int
    height: int
    fps: Fraction

    @property
    def kind(self) -> str:
        """ "passthrough", "compressed" (decoded before encoding) or "raw"."""
        if self.pixel_format in PASSTHROUGH_FORMATS:
            return "passthrough"
        if self.pixel_format in COMPRESSED_FORMATS:
            return "compressed"
        return "raw"


def usable(pixel_format: str) -> bool:
    return (
        pixel_format in PASSTHROUGH_FORMATS
        or pixel_format in COMPRESSED_FORMATS
        or pixel_format in RAW_FORMATS
    )


def choose_mode(
    offers: list[FormatOffer],
    width: int,
    height: int,
    fps: float,
    pixel_format: str = "auto",
    device: str = "the camera",
) -> Mode:
    """The offered mode for `width`x`height` at `fps` in `pixel_format` ("auto": the cheapest).

    The size must be offered exactly. The frame rate is the offered one nearest to `fps` that is not
    below it (else the fastest offered), within 10 %: a camera that cannot come close is refused.
    """
    if pixel_format == "auto":
        candidates = [o for p in AUTO_PREFERENCE for o in offers if o.pixel_format == p]
    else:
        candidates = [o for o in offers if o.pixel_format == pixel_format]
        if candidates and not usable(pixel_format):
            raise DeviceError(
                f"{device}: pixel format {pixel_format} cannot be streamed; usable formats: "
                + ", ".join(sorted(p for p in (o.pixel_format for o in offers) if usable(p)))
            )
    target = Fraction(fps).limit_denominator(1001)
    for offer in candidates:
        for size in offer.sizes:
            if not size.fits(width, height):
                continue
            rate = _pick_rate(size.fps, target)
            if rate is not None:
                return Mode(offer.pixel_format, width, height, rate)
    wanted = f"{pixel_format} {width}x{height}@{_fps_text(target)}"
    raise DeviceError(f"{device} cannot capture {wanted}; it offers {describe_offers(offers)}")


def describe_offers(offers: list[FormatOffer]) -> str:
    """The usable offers, formats with the same sizes on one line: short enough for a log line."""
    groups: dict[str, list[str]] = {}
    for offer in offers:
        if usable(offer.pixel_format):
            sizes = ", ".join(s.describe() for s in offer.sizes) or "no sizes listed"
            groups.setdefault(sizes, []).append(offer.pixel_format)
    text = "; ".join(f"{'/'.join(formats)} at {sizes}" for sizes, formats in groups.items())
    others = sum(1 for o in offers if not usable(o.pixel_format))
    if others:
        text += f" (and {others} format{'s' if others > 1 else ''} that cannot be streamed)"
    return text or "nothing"


def nearest_mode(
    offers: list[FormatOffer], width: int, height: int, fps: float, where: str
) -> Mode:
    """The usable mode nearest to the one asked for (the "auto" source takes it rather than
    refuse)."""
    best: tuple[float, int, Mode] | None = None
    for offer in offers:
        if offer.pixel_format not in AUTO_PREFERENCE:
            continue
        rank = AUTO_PREFERENCE.index(offer.pixel_format)
        for size in offer.sizes:
            w = min(max(width, size.width), size.max_width or size.width)
            h = min(max(height, size.height), size.max_height or size.height)
            rates = size.fps or (Fraction(fps),)
            rate = min(rates, key=lambda r: abs(float(r) - fps))
            score = abs(w * h - width * height) / (width * height) + abs(float(rate) - fps) / fps
            if best is None or (score, rank) < best[:2]:
                best = (score, rank, Mode(offer.pixel_format, w & ~1, h & ~1, rate))
    if best is None:
        raise DeviceError(f"{where} offers no format this daemon can stream")
    return best[2]


def pick_mode(
    offers: list[FormatOffer],
    width: int,
    height: int,
    fps: float,
    pixel_format: str,
    device: str,
    lenient: bool,
) -> tuple[Mode, str]:
    """`choose_mode`, or when `lenient` and nothing fits, `nearest_mode` with a note saying so."""
    try:
        return choose_mode(offers, width, height, fps, pixel_format, device), ""
    except DeviceError as e:
        if not lenient:
            raise
        mode = nearest_mode(offers, width, height, fps, device)
        note = f"{e}; using {mode.pixel_format} {mode.width}x{mode.height}@{_fps_text(mode.fps)}"
        return mode, note


def _pick_rate(rates: tuple[Fraction, ...], target: Fraction) -> Fraction | None:
    if not rates:  # the driver lists no intervals: ask for the target and let S_PARM settle it
        return target
    at_least = [r for r in rates if r >= target * Fraction(9, 10)]
    best = min(at_least, key=lambda r: abs(r - target)) if at_least else None
    if best is None or abs(best - target) > target / 10:
        return None
    return best


def _fps_text(rate: Fraction) -> str:
    return str(int(rate)) if rate.denominator == 1 else f"{float(rate):.2f}"
