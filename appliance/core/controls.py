"""Camera controls (brightness, exposure, white balance, focus, ...): description and validation.

Core module (no I/O). V4L2 and libcamera both describe a control by a range or a menu; both map onto
`Control`, named the way `v4l2-ctl` names them (lower case, words joined by `_`: `brightness`,
`white_balance_automatic`, `exposure_time_absolute`), so the JSON API reads the same whatever the
camera. `validate` turns a JSON value into what the device accepts, or says precisely why not.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any


class ControlError(ValueError):
    """A control value or name that the camera cannot take; the message says why."""


def control_name(label: str) -> str:
    """`v4l2-ctl`'s name for a control label: "White Balance, Automatic" → white_balance_automatic."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", label)  # libcamera: "ExposureTime"
    return re.sub(r"[^a-z0-9]+", "_", spaced.lower()).strip("_")


@dataclass(frozen=True, slots=True)
class Control:
    name: str
    type: str  # "int", "bool", "menu", "button" or "float" (libcamera)
    minimum: float = 0
    maximum: float = 0
    step: float = 1
    default: float = 0
    value: float | None = None  # None when the control cannot be read (write-only, button)
    menu: dict[int, str] = field(default_factory=dict)
    read_only: bool = False
    inactive: bool = False  # e.g. manual exposure while auto exposure is on

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "value": _number(self.value),
            "default": _number(self.default),
        }
        if self.type in ("int", "float"):
            out.update(
                min=_number(self.minimum), max=_number(self.maximum), step=_number(self.step)
            )
        if self.menu:
            out["menu"] = {str(k): v for k, v in sorted(self.menu.items())}
        if self.read_only:
            out["read_only"] = True
        if self.inactive:
            out["inactive"] = True
        return out

    def validate(self, value: Any) -> float:
        """The device value for a JSON value, or ControlError naming what is accepted."""
        if self.read_only:
            raise ControlError(f"{self.name} is read-only")
        if self.type == "bool":
            if isinstance(value, bool):
                return int(value)
            if value in (0, 1) and not isinstance(value, float):
                return int(value)
            raise ControlError(f"{self.name} takes true or false; got {value!r}")
        if self.type == "menu":
            if isinstance(value, str):
                for key, label in self.menu.items():
                    if label == value or control_name(label) == control_name(value):
                        return key
            elif isinstance(value, int) and not isinstance(value, bool) and value in self.menu:
                return value
            choices = ", ".join(f"{k} ({v})" for k, v in sorted(self.menu.items()))
            raise ControlError(f"{self.name} takes one of {choices}; got {value!r}")
        if self.type == "button":
            if value is True or value == 1:
                return 1
            raise ControlError(f"{self.name} is a button: send true to press it")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ControlError(f"{self.name} takes a number; got {value!r}")
        if not math.isfinite(value):
            raise ControlError(f"{self.name} takes a finite number; got {value!r}")
        if self.type == "int" and value != int(value):
            raise ControlError(f"{self.name} takes a whole number; got {value!r}")
        if not self.minimum <= value <= self.maximum:
            raise ControlError(
                f"{self.name} takes {_number(self.minimum)} to {_number(self.maximum)}; got {value!r}"
            )
        if self.type == "int":
            step = int(self.step) or 1
            if (int(value) - int(self.minimum)) % step:
                raise ControlError(
                    f"{self.name} moves in steps of {step} from {_number(self.minimum)}; "
                    f"got {value!r}"
                )
            return int(value)
        return float(value)


def validate_all(controls: list[Control], values: dict[str, Any]) -> dict[str, float]:
    """Validate a whole request before anything is applied: all of it is good, or none is set."""
    by_name = {c.name: c for c in controls}
    out: dict[str, float] = {}
    for name, value in values.items():
        control = by_name.get(name)
        if control is None:
            known = ", ".join(sorted(by_name)) or "none"
            raise ControlError(f"no control named {name!r}; this camera has: {known}")
        out[name] = control.validate(value)
    return out


def _number(value: float | None) -> float | int | None:
    if value is None:
        return None
    return int(value) if float(value).is_integer() else float(value)
