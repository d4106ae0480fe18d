"""The M2M encoder's logic without hardware. It runs against a real stateful M2M driver (vicodec)
in tests/vm, and against the Raspberry Pi 4's encoder in tests/hardware."""

import pytest

from appliance import config
from appliance.capture.sources import make_encoder
from appliance.core.errors import DeviceError
from appliance.encoders.v4l2m2m import M2MEncoder, is_h264_encoder, v4l2_level


def test_levels_map_to_the_v4l2_enum() -> None:
    assert v4l2_level(31) == 9  # V4L2_MPEG_VIDEO_H264_LEVEL_3_1
    assert v4l2_level(40) == 11  # LEVEL_4_0
    assert v4l2_level(14) == 5  # no 1.4: the next level up, 2.0
    with pytest.raises(ValueError, match="above 5.1"):
        v4l2_level(52)


def test_no_encoder_device_means_libx264() -> None:
    cfg = config.load(None, env={}, overrides={"video.m2m_device": "/dev/video-none"})
    assert not is_h264_encoder("/dev/video-none")
    assert not is_h264_encoder("/dev/null")  # exists, but not V4L2
    assert make_encoder(cfg.video).name.startswith("libx264")


def test_asking_for_the_hardware_encoder_where_there_is_none_is_a_clear_error() -> None:
    cfg = config.load(None, env={}, overrides={"video.m2m_device": "/dev/null"})
    with pytest.raises(DeviceError, match="/dev/null: VIDIOC_QUERYCAP"):
        M2MEncoder(cfg.video)
