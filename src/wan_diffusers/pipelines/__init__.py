"""Wan 2.1 pipelines: text-to-video, image-to-video (and first-last-frame), video-to-video and VACE."""
