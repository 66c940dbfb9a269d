"""Reading media: video frames (PyAV / decord, clip ranges, frame folders) and images."""
