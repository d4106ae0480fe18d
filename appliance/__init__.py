"""appliance: a camera streaming appliance (encode once, WebRTC fan-out over WHEP)."""

__version__ = "0.1.0"
