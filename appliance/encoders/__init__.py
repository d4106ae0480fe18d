"""Encoders: raw pictures in, H.264 access units out. Hardware backends import their libraries lazily."""
