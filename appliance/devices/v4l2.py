"""V4L2 devices: capabilities, formats, controls and mmap streaming, through v4l2-python3's ctypes.

Edge module. `Device` wraps one open `/dev/videoN` (opened non-blocking, so a dequeue never waits:
the event loop or a thread polls the descriptor). It serves capture sources (`capture/camera.py`)
and the memory-to-memory encoder (`encoders/v4l2m2m.py`) alike, for single-planar and
multi-planar queues.

v4l2-python3 (the binding picamera2 uses) gets `v4l2_frmsize_stepwise` wrong (its `max_width` is
missing and `min_height` appears twice), and predates `v4l2_capability.device_caps`; both are read
from the raw structure here.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import glob
import mmap
import os
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import v4l2

from appliance.core.controls import Control, ControlError, control_name
from appliance.core.errors import DeviceError
from appliance.core.videomode import FormatOffer, Mode, SizeOffer, fourcc, fourcc_text

CAPTURE = v4l2.V4L2_BUF_TYPE_VIDEO_CAPTURE
OUTPUT = v4l2.V4L2_BUF_TYPE_VIDEO_OUTPUT
CAPTURE_MPLANE = v4l2.V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE
OUTPUT_MPLANE = v4l2.V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE
_MPLANE = (CAPTURE_MPLANE, OUTPUT_MPLANE)
MAX_PLANES = 8  # VIDEO_MAX_PLANES

BUF_FLAG_KEYFRAME = v4l2.V4L2_BUF_FLAG_KEYFRAME
CID_FORCE_KEY_FRAME = v4l2.V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME
BUF_FLAG_ERROR = 0x0040
BUF_FLAG_TIMESTAMP_MASK = 0xE000
BUF_FLAG_TIMESTAMP_MONOTONIC = 0x2000
CTRL_WHICH_CUR_VAL = 0
SEL_TGT_CROP = 0
VIDIOC_S_SELECTION = 0xC040565F  # _IOWR('V', 95, struct v4l2_selection): 64 bytes
_CTRL_TYPES = {
    v4l2.V4L2_CTRL_TYPE_INTEGER: "int",
    v4l2.V4L2_CTRL_TYPE_BOOLEAN: "bool",
    v4l2.V4L2_CTRL_TYPE_MENU: "menu",
    v4l2.V4L2_CTRL_TYPE_INTEGER_MENU: "menu",
    v4l2.V4L2_CTRL_TYPE_BUTTON: "button",
    v4l2.V4L2_CTRL_TYPE_INTEGER64: "int",
}


def _ioc(request: int) -> int:
    return request & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Capabilities:
    driver: str
    card: str
    bus_info: str
    caps: int  # the node's own capabilities (device_caps when the driver reports them)

    @property
    def is_capture(self) -> bool:
        return bool(self.caps & (v4l2.V4L2_CAP_VIDEO_CAPTURE | v4l2.V4L2_CAP_VIDEO_CAPTURE_MPLANE))

    @property
    def is_m2m(self) -> bool:
        return bool(self.caps & (v4l2.V4L2_CAP_VIDEO_M2M | v4l2.V4L2_CAP_VIDEO_M2M_MPLANE))

    @property
    def multiplanar(self) -> bool:
        return bool(
            self.caps & (v4l2.V4L2_CAP_VIDEO_CAPTURE_MPLANE | v4l2.V4L2_CAP_VIDEO_M2M_MPLANE)
        )

    @property
    def streaming(self) -> bool:
        return bool(self.caps & v4l2.V4L2_CAP_STREAMING)


@dataclass(frozen=True, slots=True)
class Dequeued:
    index: int
    bytesused: int
    timestamp_ns: int  # CLOCK_MONOTONIC when the driver says so (flags), else whatever it put
    flags: int
    sequence: int

    @property
    def monotonic(self) -> bool:
        return self.flags & BUF_FLAG_TIMESTAMP_MASK == BUF_FLAG_TIMESTAMP_MONOTONIC


def resolve(path: str) -> str:
    """`/dev/v4l/by-id/usb-...-video-index0` or `/dev/videoN` → the `/dev/videoN` it names."""
    return os.path.realpath(path)


def video_nodes() -> list[str]:
    """Every /dev/videoN, in number order."""
    nodes = glob.glob("/dev/video[0-9]*")
    return sorted(nodes, key=lambda p: int(p[len("/dev/video") :]))


def stable_names() -> dict[str, str]:
    """/dev/videoN → its /dev/v4l/by-id name (stable across reboots and replugs), where one exists."""
    names: dict[str, str] = {}
    for link in sorted(glob.glob("/dev/v4l/by-id/*")):
        names.setdefault(resolve(link), link)
    return names


class Device:
    """One open V4L2 node."""

    def __init__(self, path: str) -> None:
        self.path = path
        node = resolve(path)
        try:
            self.fd = os.open(node, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            present = ", ".join(video_nodes()) or "none"
            raise DeviceError(f"{path}: no such device (video devices here: {present})") from None
        except PermissionError:
            raise DeviceError(
                f"{path}: permission denied; the daemon's user must be in the 'video' group"
            ) from None
        except OSError as e:
            raise DeviceError(f"{path}: cannot open: {e.strerror}") from None
        self._maps: dict[int, list[list[mmap.mmap]]] = {}  # per queue: buffers → planes
        self._buf_type = 0  # the queue queue()/dequeue()/plane() use when not told
        try:
            self.caps = self._querycap()
        except DeviceError:
            os.close(self.fd)
            raise

    # -- plumbing ------------------------------------------------------------------------------

    def ioctl(self, request: int, arg: Any, what: str) -> None:
        try:
            fcntl.ioctl(self.fd, _ioc(request), arg)
        except OSError as e:
            if e.errno == errno.ENODEV:  # whichever call notices first (QBUF from the encoder
                # thread, or DQBUF on the loop), an unplugged camera is said the same way
                raise DeviceError(f"{self.path}: the device went away ({e.strerror})") from e
            raise DeviceError(
                f"{self.path}: {what} failed: {e.strerror}",
            ) from e

    def _try(self, request: int, arg: Any) -> int:
        """0, or the errno of a refused ioctl (for enumerations that end with EINVAL)."""
        try:
            fcntl.ioctl(self.fd, _ioc(request), arg)
        except OSError as e:
            return e.errno or errno.EIO
        return 0

    def close(self) -> None:
        if self.fd < 0:
            return
        self.stop()
        os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the device is --------------------------------------------------------------------

    def _querycap(self) -> Capabilities:
        cap = v4l2.v4l2_capability()
        self.ioctl(v4l2.VIDIOC_QUERYCAP, cap, "VIDIOC_QUERYCAP (is it a V4L2 device?)")
        caps = cap.capabilities
        if caps & v4l2.V4L2_CAP_DEVICE_CAPS:  # device_caps: the binding calls it reserved[0]
            caps = struct.unpack_from("I", bytes(cap), 88)[0]
        return Capabilities(
            driver=cap.driver.decode(errors="replace"),
            card=cap.card.decode(errors="replace"),
            bus_info=cap.bus_info.decode(errors="replace"),
            caps=caps,
        )

    def formats(self, buf_type: int | None = None) -> list[FormatOffer]:
        """Every pixel format of a queue (the capture queue by default), with sizes and rates."""
        if buf_type is None:
            buf_type = CAPTURE_MPLANE if self.caps.multiplanar else CAPTURE
        offers = []
        desc = v4l2.v4l2_fmtdesc()
        desc.type = buf_type
        desc.index = 0
        while self._try(v4l2.VIDIOC_ENUM_FMT, desc) == 0:
            code = fourcc_text(desc.pixelformat)
            offers.append(
                FormatOffer(
                    code,
                    desc.description.decode(errors="replace"),
                    tuple(self._sizes(desc.pixelformat)),
                )
            )
            desc.index += 1
        return offers

    def _sizes(self, pixelformat: int) -> list[SizeOffer]:
        sizes = []
        fs = v4l2.v4l2_frmsizeenum()
        fs.pixel_format = pixelformat
        fs.index = 0
        while self._try(v4l2.VIDIOC_ENUM_FRAMESIZES, fs) == 0:
            if fs.type == v4l2.V4L2_FRMSIZE_TYPE_DISCRETE:
                w, h = fs.discrete.width, fs.discrete.height
                sizes.append(SizeOffer(w, h, fps=tuple(self._rates(pixelformat, w, h))))
            else:  # stepwise or continuous: one entry; read the union raw (see module doc)
                raw = bytes(memoryview(fs).cast("B")[12:36])
                min_w, max_w, step_w, min_h, max_h, step_h = struct.unpack("6I", raw)
                sizes.append(SizeOffer(min_w, min_h, max_w, max_h, max(1, step_w), max(1, step_h)))
                break
            fs.index += 1
        return sizes

    def _rates(self, pixelformat: int, width: int, height: int) -> list[Fraction]:
        rates = []
        fi = v4l2.v4l2_frmivalenum()
        fi.pixel_format, fi.width, fi.height, fi.index = pixelformat, width, height, 0
        while self._try(v4l2.VIDIOC_ENUM_FRAMEINTERVALS, fi) == 0:
            if fi.type == v4l2.V4L2_FRMIVAL_TYPE_DISCRETE:
                if fi.discrete.numerator:
                    rates.append(Fraction(fi.discrete.denominator, fi.discrete.numerator))
            else:  # a range of intervals: report its ends (fastest first)
                lo, hi = fi.stepwise.min, fi.stepwise.max
                if lo.numerator and hi.numerator:
                    rates += [
                        Fraction(lo.denominator, lo.numerator),
                        Fraction(hi.denominator, hi.numerator),
                    ]
                break
            fi.index += 1
        return rates

    # -- format and rate -----------------------------------------------------------------------

    def set_format(
        self, buf_type: int, pixel_format: str, width: int, height: int, sizeimage: int = 0
    ) -> tuple[int, int, int, int]:
        """VIDIOC_S_FMT; returns what the driver settled on: (width, height, bytesperline,
        sizeimage). Refuses when the driver substitutes another pixel format."""
        fmt = v4l2.v4l2_format()
        fmt.type = buf_type
        if buf_type in _MPLANE:
            mp = fmt.fmt.pix_mp
            mp.width, mp.height, mp.pixelformat = width, height, fourcc(pixel_format)
            mp.field = v4l2.V4L2_FIELD_NONE
            mp.num_planes = 1
            mp.plane_fmt[0].sizeimage = sizeimage
            self.ioctl(v4l2.VIDIOC_S_FMT, fmt, f"setting format {pixel_format} {width}x{height}")
            got = mp.pixelformat
            result = (mp.width, mp.height, mp.plane_fmt[0].bytesperline, mp.plane_fmt[0].sizeimage)
        else:
            pix = fmt.fmt.pix
            pix.width, pix.height, pix.pixelformat = width, height, fourcc(pixel_format)
            pix.field = v4l2.V4L2_FIELD_NONE
            pix.sizeimage = sizeimage
            self.ioctl(v4l2.VIDIOC_S_FMT, fmt, f"setting format {pixel_format} {width}x{height}")
            got = pix.pixelformat
            result = (pix.width, pix.height, pix.bytesperline, pix.sizeimage)
        if got != fourcc(pixel_format):
            raise DeviceError(
                f"{self.path}: asked for {pixel_format}, the driver chose {fourcc_text(got)}"
            )
        return result

    def set_crop(self, buf_type: int, width: int, height: int) -> None:
        """VIDIOC_S_SELECTION, target CROP: the visible part of an aligned picture (an encoder's
        OUTPUT queue: 1920x1080 in a 1920x1088 buffer). The binding has no v4l2_selection."""
        single = OUTPUT if buf_type in (OUTPUT, OUTPUT_MPLANE) else CAPTURE
        sel = bytearray(
            struct.pack("3I2i2I9I", single, SEL_TGT_CROP, 0, 0, 0, width, height, *[0] * 9)
        )
        self.ioctl(VIDIOC_S_SELECTION, sel, f"cropping to {width}x{height}")

    def set_mode(self, mode: Mode) -> tuple[int, int, int, int]:
        """Capture format and frame rate of `mode`; refuses a size the driver changes."""
        buf_type = CAPTURE_MPLANE if self.caps.multiplanar else CAPTURE
        got = self.set_format(buf_type, mode.pixel_format, mode.width, mode.height)
        if got[:2] != (mode.width, mode.height):
            raise DeviceError(
                f"{self.path}: asked for {mode.width}x{mode.height}, the driver chose "
                f"{got[0]}x{got[1]}"
            )
        self.set_rate(buf_type, mode.fps)
        return got

    def set_rate(self, buf_type: int, fps: Fraction) -> Fraction | None:
        """VIDIOC_S_PARM time per frame; the rate the driver chose, or None if it has no control."""
        parm = v4l2.v4l2_streamparm()
        parm.type = buf_type
        if self._try(v4l2.VIDIOC_G_PARM, parm) != 0:
            return None
        side = parm.parm.output if buf_type in (OUTPUT, OUTPUT_MPLANE) else parm.parm.capture
        if not side.capability & v4l2.V4L2_CAP_TIMEPERFRAME:
            return None
        side.timeperframe.numerator = fps.denominator
        side.timeperframe.denominator = fps.numerator
        self.ioctl(v4l2.VIDIOC_S_PARM, parm, f"setting {float(fps):g} fps")
        tpf = side.timeperframe
        return Fraction(tpf.denominator, tpf.numerator) if tpf.numerator else None

    # -- controls ------------------------------------------------------------------------------

    def controls(self) -> list[Control]:
        """Every user-visible control with its current value (VIDIOC_QUERY_EXT_CTRL walk)."""
        out = []
        self._ids: dict[str, tuple[int, int]] = {}
        q = v4l2.v4l2_query_ext_ctrl()
        q.id = v4l2.V4L2_CTRL_FLAG_NEXT_CTRL
        while self._try(v4l2.VIDIOC_QUERY_EXT_CTRL, q) == 0:
            ctrl_id, ctrl_type, flags = q.id, q.type, q.flags
            q.id = ctrl_id | v4l2.V4L2_CTRL_FLAG_NEXT_CTRL
            kind = _CTRL_TYPES.get(ctrl_type)
            if kind is None or flags & v4l2.V4L2_CTRL_FLAG_DISABLED:
                continue  # control classes, strings, compound controls: not camera settings
            name = control_name(q.name.decode(errors="replace"))
            self._ids[name] = (ctrl_id, ctrl_type)
            menu = self._menu(ctrl_id, ctrl_type, q.minimum, q.maximum) if kind == "menu" else {}
            value = None
            if kind != "button" and not flags & v4l2.V4L2_CTRL_FLAG_WRITE_ONLY:
                value = self._get(ctrl_id)
            out.append(
                Control(
                    name=name,
                    type=kind,
                    minimum=q.minimum,
                    maximum=q.maximum,
                    step=q.step,
                    default=q.default_value,
                    value=value,
                    menu=menu,
                    read_only=bool(flags & v4l2.V4L2_CTRL_FLAG_READ_ONLY),
                    inactive=bool(flags & v4l2.V4L2_CTRL_FLAG_INACTIVE),
                )
            )
        return out

    def _menu(self, ctrl_id: int, ctrl_type: int, low: int, high: int) -> dict[int, str]:
        items = {}
        qm = v4l2.v4l2_querymenu()
        for index in range(low, high + 1):
            qm.id, qm.index = ctrl_id, index
            if self._try(v4l2.VIDIOC_QUERYMENU, qm) == 0:
                if ctrl_type == v4l2.V4L2_CTRL_TYPE_INTEGER_MENU:  # the union holds an int64
                    items[index] = str(struct.unpack_from("q", bytes(qm), 8)[0])
                else:
                    items[index] = qm.name.decode(errors="replace")
        return items

    def _get(self, ctrl_id: int) -> int | None:
        ctrl = v4l2.v4l2_ext_control()
        ctrl.id = ctrl_id
        ctrls = v4l2.v4l2_ext_controls()
        ctrls.which = CTRL_WHICH_CUR_VAL
        ctrls.count = 1
        ctrls.controls = ctypes.pointer(ctrl)
        if self._try(v4l2.VIDIOC_G_EXT_CTRLS, ctrls) != 0:
            return None
        value: int = ctrl.value64
        return value

    def set_control_id(self, ctrl_id: int, value: int, what: str) -> None:
        """VIDIOC_S_EXT_CTRLS of one control by id (64-bit safe)."""
        ctrl = v4l2.v4l2_ext_control()
        ctrl.id = ctrl_id
        ctrl.value64 = value
        ctrls = v4l2.v4l2_ext_controls()
        ctrls.which = CTRL_WHICH_CUR_VAL
        ctrls.count = 1
        ctrls.controls = ctypes.pointer(ctrl)
        self.ioctl(v4l2.VIDIOC_S_EXT_CTRLS, ctrls, f"setting {what} to {value}")

    def has_control(self, ctrl_id: int) -> bool:
        q = v4l2.v4l2_query_ext_ctrl()
        q.id = ctrl_id
        return self._try(v4l2.VIDIOC_QUERY_EXT_CTRL, q) == 0 and not (
            q.flags & v4l2.V4L2_CTRL_FLAG_DISABLED
        )

    def set_controls(self, values: dict[str, float]) -> None:
        """Set validated values by name (names from `controls()`)."""
        if not hasattr(self, "_ids"):
            self.controls()
        for name, value in values.items():
            ids = self._ids.get(name)
            if ids is None:
                raise ControlError(f"no control named {name!r}")
            try:
                self.set_control_id(ids[0], int(value), name)
            except DeviceError as e:
                raise ControlError(str(e)) from None

    # -- streaming -----------------------------------------------------------------------------

    def start(self, buf_type: int, count: int, queue_all: bool = True) -> int:
        """REQBUFS + mmap + (optionally) queue every buffer + STREAMON. Returns the buffer count."""
        req = v4l2.v4l2_requestbuffers()
        req.type, req.memory, req.count = buf_type, v4l2.V4L2_MEMORY_MMAP, count
        self.ioctl(v4l2.VIDIOC_REQBUFS, req, f"requesting {count} buffers")
        if req.count < 1:
            raise DeviceError(f"{self.path}: the driver gave no buffers")
        maps: list[list[mmap.mmap]] = []
        for index in range(req.count):
            buf, planes = self._buffer(buf_type, index)
            self.ioctl(v4l2.VIDIOC_QUERYBUF, buf, "VIDIOC_QUERYBUF")
            if planes is None:
                maps.append([self._mmap(buf.length, buf.m.offset)])
            else:
                maps.append([self._mmap(p.length, p.m.mem_offset) for p in planes[: buf.length]])
        self._maps[buf_type] = maps
        if not self._buf_type or buf_type in (CAPTURE, CAPTURE_MPLANE):
            self._buf_type = buf_type
        if queue_all:
            for index in range(req.count):
                self.queue(index, buf_type=buf_type)
        self.ioctl(v4l2.VIDIOC_STREAMON, ctypes.c_int(buf_type), "VIDIOC_STREAMON")
        given: int = req.count
        return given

    def _mmap(self, length: int, offset: int) -> mmap.mmap:
        return mmap.mmap(
            self.fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=offset
        )

    def _buffer(self, buf_type: int, index: int) -> tuple[Any, Any]:
        buf = v4l2.v4l2_buffer()
        buf.type, buf.memory, buf.index = buf_type, v4l2.V4L2_MEMORY_MMAP, index
        planes = None
        if buf_type in _MPLANE:
            planes = (v4l2.v4l2_plane * MAX_PLANES)()
            buf.m.planes = ctypes.cast(planes, ctypes.POINTER(v4l2.v4l2_plane))
            buf.length = MAX_PLANES
        return buf, planes

    def plane(self, index: int, plane: int = 0, buf_type: int = 0) -> mmap.mmap:
        """The mapped memory of buffer `index` (plane `plane`) of a queue (capture by default)."""
        return self._maps[buf_type or self._buf_type][index][plane]

    def queue(
        self,
        index: int,
        bytesused: int = 0,
        timestamp_ns: int = 0,
        flags: int = 0,
        buf_type: int = 0,
    ) -> None:
        buf_type = buf_type or self._buf_type
        buf, planes = self._buffer(buf_type, index)
        buf.flags = flags
        buf.field = v4l2.V4L2_FIELD_NONE
        buf.timestamp.secs, usec = divmod(timestamp_ns // 1000, 1_000_000)
        buf.timestamp.usecs = usec
        if planes is not None:
            buf.length = len(self._maps[buf_type][index])
            planes[0].bytesused = bytesused
        else:
            buf.bytesused = bytesused
        self.ioctl(v4l2.VIDIOC_QBUF, buf, "VIDIOC_QBUF")

    def dequeue(self, buf_type: int = 0) -> Dequeued | None:
        """The next filled buffer, or None when none is ready (the descriptor is non-blocking)."""
        buf, planes = self._buffer(buf_type or self._buf_type, 0)
        try:
            fcntl.ioctl(self.fd, _ioc(v4l2.VIDIOC_DQBUF), buf)
        except OSError as e:
            if e.errno == errno.EAGAIN:
                return None
            if e.errno in (errno.ENODEV, errno.EIO, errno.EPIPE):
                raise DeviceError(f"{self.path}: the device went away ({e.strerror})") from e
            raise DeviceError(f"{self.path}: VIDIOC_DQBUF failed: {e.strerror}") from e
        used = planes[0].bytesused if planes is not None else buf.bytesused
        ts = buf.timestamp.secs * 1_000_000_000 + buf.timestamp.usecs * 1000
        return Dequeued(buf.index, used, ts, buf.flags, buf.sequence)

    def stop(self) -> None:
        """STREAMOFF and release the buffers of every queue (errors ignored: the device may be
        gone)."""
        for buf_type, maps in self._maps.items():
            self._try(v4l2.VIDIOC_STREAMOFF, ctypes.c_int(buf_type))
            for planes in maps:
                for m in planes:
                    try:
                        m.close()
                    except BufferError:  # a view still exported; the mapping goes with the process
                        pass
            req = v4l2.v4l2_requestbuffers()
            req.type, req.memory, req.count = buf_type, v4l2.V4L2_MEMORY_MMAP, 0
            self._try(v4l2.VIDIOC_REQBUFS, req)
        self._maps = {}
        self._buf_type = 0
