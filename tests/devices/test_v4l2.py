"""The V4L2 edge without a camera: ioctl numbers and structures against the kernel's 64-bit ABI,
the conversion of captured buffers into pictures, and the errors of devices that are not cameras.
(Real drivers: tests/vm.)"""

import ctypes
import struct
from fractions import Fraction
from typing import Any

import av
import numpy as np
import pytest
import v4l2

from appliance.capture.testsrc import TestPattern
from appliance.core.errors import DeviceError
from appliance.core.videomode import Mode
from appliance.devices import v4l2 as dev
from appliance.encoders.worker import converter

pytestmark = pytest.mark.skipif(ctypes.sizeof(ctypes.c_long) != 8, reason="64-bit ABI values")


def test_ioctl_numbers_are_the_kernels() -> None:
    # From linux/videodev2.h as compiled on a 64-bit kernel (`_IOWR('V', nr, struct ...)`).
    expected = {
        "VIDIOC_QUERYCAP": 0x80685600,
        "VIDIOC_ENUM_FMT": 0xC0405602,
        "VIDIOC_S_FMT": 0xC0D05605,
        "VIDIOC_REQBUFS": 0xC0145608,
        "VIDIOC_QUERYBUF": 0xC0585609,
        "VIDIOC_QBUF": 0xC058560F,
        "VIDIOC_DQBUF": 0xC0585611,
        "VIDIOC_STREAMON": 0x40045612,
        "VIDIOC_G_PARM": 0xC0CC5615,
        "VIDIOC_S_EXT_CTRLS": 0xC0205648,
        "VIDIOC_ENUM_FRAMESIZES": 0xC02C564A,
        "VIDIOC_ENUM_FRAMEINTERVALS": 0xC034564B,
        "VIDIOC_QUERY_EXT_CTRL": 0xC0E85667,
    }
    assert {name: getattr(v4l2, name) & 0xFFFFFFFF for name in expected} == expected


def test_structures_the_binding_gets_wrong_are_read_raw() -> None:
    # v4l2_frmsizeenum: index, pixel_format, type, then the 24-byte union at offset 12.
    fs = v4l2.v4l2_frmsizeenum()
    assert type(fs).discrete.offset == 12 and ctypes.sizeof(fs) == 44
    memoryview(fs).cast("B")[12:36] = struct.pack("6I", 32, 1920, 2, 16, 1080, 4)
    assert struct.unpack("6I", bytes(memoryview(fs).cast("B")[12:36])) == (32, 1920, 2, 16, 1080, 4)
    # v4l2_capability.device_caps sits where the binding has reserved[0].
    assert type(v4l2.v4l2_capability()).reserved.offset == 88


def picture(width: int, height: int) -> np.ndarray[Any, Any]:
    return TestPattern(width, height).render(7, 1_234_567)


def padded(rows: np.ndarray[Any, Any], stride: int) -> np.ndarray[Any, Any]:
    """Rows laid out at `stride` bytes, as drivers pad them."""
    out = np.zeros((rows.shape[0], stride), np.uint8)
    out[:, : rows.shape[1]] = rows
    return out


# fourcc: (PyAV format, bytes per pixel of the first plane, the other planes' stride divisor)
RAW = {
    "YU12": ("yuv420p", 1, 2),
    "NV12": ("nv12", 1, 1),
    "YUYV": ("yuyv422", 2, 0),
    "UYVY": ("uyvy422", 2, 0),
    "RGB3": ("rgb24", 3, 0),
    "GREY": ("gray", 1, 0),
}


def driver_buffer(frame: Any, bpp: int, divisor: int, stride: int) -> bytes:
    """`frame`'s planes as a driver lays them out: rows padded to `stride` (luma or packed) and to
    `stride // divisor` (chroma)."""
    out = []
    for i, plane in enumerate(frame.planes):
        row_bytes = frame.width * bpp if i == 0 else frame.width // divisor  # NV12: U and V, w wide
        rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:, :row_bytes]
        out.append(padded(rows, stride if i == 0 else stride // divisor).reshape(-1))
    return np.concatenate(out).tobytes()


@pytest.mark.parametrize("pixel_format", RAW)
def test_raw_buffers_with_padded_rows_become_the_picture(pixel_format: str) -> None:
    w, h = 320, 240
    name, bpp, divisor = RAW[pixel_format]
    reference = av.VideoFrame.from_ndarray(picture(w, h), format="yuv420p")
    stride = w * bpp + 64
    buffer = driver_buffer(reference.reformat(format=name), bpp, divisor, stride)
    frames = converter(Mode(pixel_format, w, h, Fraction(30)), stride)(memoryview(buffer))
    assert len(frames) == 1
    got = frames[0].reformat(format="gray").to_ndarray()
    want = reference.reformat(format="gray").to_ndarray()
    assert got.shape == (h, w)
    assert np.abs(got.astype(int) - want.astype(int)).mean() < 2.0


def test_mjpeg_buffers_are_decoded() -> None:
    w, h = 320, 240
    jpeg = av.CodecContext.create("mjpeg", "w")
    jpeg.width, jpeg.height, jpeg.pix_fmt = w, h, "yuvj420p"
    jpeg.time_base = Fraction(1, 30)
    frame = av.VideoFrame.from_ndarray(picture(w, h), format="yuv420p").reformat(format="yuvj420p")
    frame.pts = 0
    data = b"".join(bytes(p) for p in jpeg.encode(frame))
    convert = converter(Mode("MJPG", w, h, Fraction(30)), 0)
    frames = convert(memoryview(data + bytes(1000)))  # a driver's buffer: JPEG, then slack
    assert [(f.width, f.height) for f in frames] == [(w, h)]
    with pytest.raises(av.error.InvalidDataError):
        convert(memoryview(b"\xff\xd8 torn off"))


def test_devices_that_are_not_cameras_are_refused_clearly(tmp_path: Any) -> None:
    with pytest.raises(
        DeviceError, match=r"^/dev/video-none: no such device \(video devices here: "
    ):
        dev.Device("/dev/video-none")
    with pytest.raises(
        DeviceError, match=r"^/dev/null: VIDIOC_QUERYCAP \(is it a V4L2 device\?\) failed: "
    ):
        dev.Device("/dev/null")
