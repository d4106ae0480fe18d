"""Where pictures and sound come from: which source runs, supervised (sources.py); what this
machine has (probe.py); V4L2 cameras (camera.py), Pi camera modules (picamera.py), GStreamer
pipelines (gstreamer.py), the built-in test pattern and tone (testsrc.py), and microphones through
ALSA (alsa.py)."""
