"""Device bindings the capture and encoder rooms share: V4L2 (v4l2.py: ioctls, formats, controls,
mmap buffers), for cameras and for the V4L2 memory-to-memory hardware encoder alike."""
