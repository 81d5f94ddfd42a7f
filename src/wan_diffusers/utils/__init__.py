"""Small helpers: video files in and out."""

from .video_io import export_to_mp4, load_image, load_video

__all__ = ["export_to_mp4", "load_image", "load_video"]
