"""Media in and out: images and videos as ``[F, H, W, 3]`` float tensors, the official conditioning
preprocessing, and atomic (and streaming) MP4 / PNG writers that carry the generation record.

* :mod:`ltxcli.media.read`: :func:`load_image`, :func:`load_video` (:func:`iter_video`, frame by frame), :func:`load_media`, :func:`read_media` (a
  file decoded once, :class:`DecodedMedia`; :func:`read_video`, a video's).
* :mod:`ltxcli.media.prepare`: the official conditioning preprocessing (:func:`preprocess_condition_frames`).
* :mod:`ltxcli.media.write`: :func:`atomic_output`, :func:`write_video`, :func:`write_image`,
  :func:`write_png_frames` (each takes whole videos or a stream of frame chunks), :func:`read_video_metadata`,
  :func:`media_info` (what ``ltx info`` shows).

Every problem with a file is a one-line :class:`MediaError` naming it.
"""

from .errors import MediaError
from .prepare import (
    CONDITION_CRF,
    centre_crop_box,
    crf_round_trip,
    gaussian_blur,
    preprocess_condition_frames,
)
from .read import (
    MAX_IMAGE_PIXELS,
    VIDEO_SUFFIXES,
    DecodedMedia,
    VideoStream,
    check_constant_rate,
    is_video_file,
    iter_video,
    load_image,
    load_media,
    load_video,
    media_num_frames,
    read_media,
    read_video,
    sniff_media,
    source_frame_count,
    video_frame_rate,
)
from .write import (
    DEFAULT_CRF,
    DEFAULT_PRESET,
    H264_PRESETS,
    VIDEO_FORMATS,
    atomic_output,
    media_info,
    read_record,
    read_video_metadata,
    to_uint8,
    video_format,
    write_image,
    write_png_frames,
    write_video,
    x264_asm,
)

__all__ = [
    "CONDITION_CRF",
    "DEFAULT_CRF",
    "DEFAULT_PRESET",
    "H264_PRESETS",
    "MAX_IMAGE_PIXELS",
    "VIDEO_FORMATS",
    "VIDEO_SUFFIXES",
    "DecodedMedia",
    "MediaError",
    "VideoStream",
    "atomic_output",
    "centre_crop_box",
    "check_constant_rate",
    "crf_round_trip",
    "gaussian_blur",
    "is_video_file",
    "iter_video",
    "load_image",
    "load_media",
    "load_video",
    "media_info",
    "media_num_frames",
    "preprocess_condition_frames",
    "read_media",
    "read_record",
    "read_video",
    "read_video_metadata",
    "sniff_media",
    "source_frame_count",
    "to_uint8",
    "video_format",
    "video_frame_rate",
    "write_image",
    "write_png_frames",
    "write_video",
    "x264_asm",
]
