import pytest

from appliance.core.controls import Control, ControlError, control_name, validate_all

BRIGHTNESS = Control("brightness", "int", 0, 255, 1, 128, 128)
EXPOSURE = Control("exposure_time_absolute", "int", 3, 2047, 2, 250, 250, inactive=True)
AUTO_WB = Control("white_balance_automatic", "bool", 0, 1, 1, 1, 1)
POWER_LINE = Control(
    "power_line_frequency", "menu", 0, 2, 1, 1, 1, {0: "Disabled", 1: "50 Hz", 2: "60 Hz"}
)
GAIN = Control("analogue_gain", "float", 1.0, 16.0, 0, 1.0, 2.5)
SENSOR = Control("sensor_temperature", "int", -40, 125, 1, 0, 41, read_only=True)
CONTROLS = [BRIGHTNESS, EXPOSURE, AUTO_WB, POWER_LINE, GAIN, SENSOR]


def test_names_are_v4l2_ctl_names_for_v4l2_and_libcamera_labels() -> None:
    assert control_name("White Balance, Automatic") == "white_balance_automatic"
    assert control_name("Exposure Time, Absolute") == "exposure_time_absolute"
    assert control_name("ExposureTime") == "exposure_time"  # libcamera
    assert control_name("AwbEnable") == "awb_enable"


def test_values_are_checked_against_the_range_step_and_type() -> None:
    assert BRIGHTNESS.validate(200) == 200
    assert EXPOSURE.validate(253) == 253
    assert GAIN.validate(3.25) == 3.25
    assert AUTO_WB.validate(False) == 0
    for control, value, message in [
        (BRIGHTNESS, 256, "brightness takes 0 to 255; got 256"),
        (BRIGHTNESS, 1.5, "brightness takes a whole number; got 1.5"),
        (BRIGHTNESS, True, "brightness takes a number; got True"),
        (EXPOSURE, 4, "exposure_time_absolute moves in steps of 2 from 3; got 4"),
        (AUTO_WB, "yes", "white_balance_automatic takes true or false; got 'yes'"),
        (SENSOR, 1, "sensor_temperature is read-only"),
        (GAIN, 0.5, "analogue_gain takes 1 to 16; got 0.5"),
    ]:
        with pytest.raises(ControlError) as e:
            control.validate(value)
        assert str(e.value) == message


def test_menus_take_an_index_or_a_label() -> None:
    assert POWER_LINE.validate(2) == 2
    assert POWER_LINE.validate("50 Hz") == 1
    assert POWER_LINE.validate("50_hz") == 1
    with pytest.raises(
        ControlError, match=r"takes one of 0 \(Disabled\), 1 \(50 Hz\), 2 \(60 Hz\); got 3"
    ):
        POWER_LINE.validate(3)


def test_a_request_is_validated_whole_before_anything_is_set() -> None:
    assert validate_all(CONTROLS, {"brightness": 10, "power_line_frequency": "60 Hz"}) == {
        "brightness": 10,
        "power_line_frequency": 2,
    }
    with pytest.raises(
        ControlError, match="no control named 'focus'; this camera has: analogue_gain, "
    ):
        validate_all(CONTROLS, {"brightness": 10, "focus": 3})


def test_json_form() -> None:
    assert POWER_LINE.as_json() == {
        "name": "power_line_frequency",
        "type": "menu",
        "value": 1,
        "default": 1,
        "menu": {"0": "Disabled", "1": "50 Hz", "2": "60 Hz"},
    }
    assert EXPOSURE.as_json()["inactive"] is True
    assert GAIN.as_json() == {
        "name": "analogue_gain", "type": "float", "value": 2.5, "default": 1,
        "min": 1, "max": 16, "step": 0,
    }  # fmt: skip
