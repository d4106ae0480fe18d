"""Capture sources: cameras, microphones and the built-in test source. Device libraries load lazily."""
