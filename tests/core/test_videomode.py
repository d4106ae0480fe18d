from fractions import Fraction

import pytest

from appliance.core.errors import DeviceError
from appliance.core.videomode import (
    FormatOffer,
    Mode,
    SizeOffer,
    choose_mode,
    describe_offers,
    fourcc,
    fourcc_text,
    nearest_mode,
    pick_mode,
)

RATES = (Fraction(30), Fraction(15))
WEBCAM = [
    FormatOffer(
        "YUYV",
        "YUYV 4:2:2",
        (SizeOffer(640, 480, fps=RATES), SizeOffer(1280, 720, fps=(Fraction(10),))),
    ),
    FormatOffer(
        "MJPG", "Motion-JPEG", (SizeOffer(640, 480, fps=RATES), SizeOffer(1280, 720, fps=RATES))
    ),
    FormatOffer("BA81", "8-bit Bayer", (SizeOffer(640, 480, fps=RATES),)),
]


def test_fourcc_round_trip() -> None:
    assert fourcc("YUYV") == 0x56595559  # v4l2_fourcc('Y','U','Y','V')
    assert fourcc_text(fourcc("H264")) == "H264"
    assert fourcc_text(fourcc("Y10")) == "Y10"  # trailing space dropped


def test_auto_takes_the_cheapest_format_that_has_the_mode() -> None:
    assert choose_mode(WEBCAM, 640, 480, 30) == Mode("YUYV", 640, 480, Fraction(30))
    # YUYV only reaches 10 fps at 720p (USB 2 bandwidth): MJPEG is the one that can do 30.
    assert choose_mode(WEBCAM, 1280, 720, 30) == Mode("MJPG", 1280, 720, Fraction(30))
    h264 = [FormatOffer("H264", "", (SizeOffer(1280, 720, fps=RATES),)), *WEBCAM]
    assert choose_mode(h264, 1280, 720, 30).kind == "passthrough"


def test_frame_rate_is_matched_within_ten_percent() -> None:
    ntsc = [FormatOffer("YUYV", "", (SizeOffer(640, 480, fps=(Fraction(30000, 1001),)),))]
    assert choose_mode(ntsc, 640, 480, 30).fps == Fraction(30000, 1001)
    with pytest.raises(DeviceError):
        choose_mode(ntsc, 640, 480, 60)


def test_stepwise_sizes() -> None:
    offers = [FormatOffer("NV12", "", (SizeOffer(32, 32, 1920, 1080, 2, 2),))]
    assert choose_mode(offers, 1280, 720, 30) == Mode("NV12", 1280, 720, Fraction(30))
    with pytest.raises(DeviceError):
        choose_mode(offers, 1281, 720, 30)


def test_refusal_lists_what_the_camera_offers() -> None:
    with pytest.raises(DeviceError) as e:
        choose_mode(WEBCAM, 1920, 1080, 30, "auto", "/dev/video0 (HD Webcam)")
    assert str(e.value) == (
        "/dev/video0 (HD Webcam) cannot capture auto 1920x1080@30; it offers "
        "YUYV at 640x480@30/15, 1280x720@10; MJPG at 640x480@30/15, 1280x720@30/15 "
        "(and 1 format that cannot be streamed)"
    )
    with pytest.raises(
        DeviceError, match="pixel format BA81 cannot be streamed; usable formats: MJPG, YUYV"
    ):
        choose_mode(WEBCAM, 640, 480, 30, "BA81")


def test_describe_offers_groups_formats_with_the_same_sizes() -> None:
    sizes = (SizeOffer(320, 240, fps=(Fraction(25, 2),)),)
    offers = [FormatOffer("YUYV", "", sizes), FormatOffer("NV12", "", sizes)]
    assert describe_offers(offers) == "YUYV/NV12 at 320x240@12.50"


def test_nearest_mode_for_the_auto_source() -> None:
    assert nearest_mode(WEBCAM, 1920, 1080, 30, "cam") == Mode("MJPG", 1280, 720, Fraction(30))
    assert nearest_mode(WEBCAM, 640, 480, 25, "cam") == Mode("YUYV", 640, 480, Fraction(30))
    with pytest.raises(DeviceError, match="offers no format this daemon can stream"):
        nearest_mode([WEBCAM[2]], 640, 480, 30, "cam")


def test_pick_mode_is_strict_unless_lenient() -> None:
    with pytest.raises(DeviceError):
        pick_mode(WEBCAM, 1920, 1080, 30, "auto", "cam", lenient=False)
    mode, note = pick_mode(WEBCAM, 1920, 1080, 30, "auto", "cam", lenient=True)
    assert mode == Mode("MJPG", 1280, 720, Fraction(30))
    assert note.endswith("; using MJPG 1280x720@30")
    assert pick_mode(WEBCAM, 640, 480, 30, "auto", "cam", lenient=True)[1] == ""
