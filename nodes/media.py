"""Nodes of the 'media' stage: load a video or still from the input folder, save a clip."""
from __future__ import annotations

import os

from ..errors import InputError
from ..media import decode, encode
from ..media.metadata import workflow_tags
from ..runtime import io_folders
from ..runtime.hooks import host_hooks
from ..runtime.saved_metadata import embed_workflow
from ._base import videodit_node

_LOADABLE = decode.VIDEO_EXTENSIONS + decode.IMAGE_EXTENSIONS


@videodit_node("VideoDiTLoadVideo", "VideoDiT Load Video", "media")
class VideoDiTLoadVideo:
    DESCRIPTION = ("Load a video (mp4, webm, mkv, mov, avi, gif) or a still image (png, jpg, "
                   "webp; a still is a 1-frame clip) from the input folder as IMAGE frames. "
                   "Choose a frame range, a frame rate and a size that fits the model.")
    RETURN_TYPES = ("IMAGE", "FLOAT", "INT")
    RETURN_NAMES = ("images", "fps", "frame_count")
    OUTPUT_TOOLTIPS = ("The frames [frames, height, width, 3], float 0..1.",
                       "Frame rate of the returned frames: force_fps (or the file's rate) "
                       "divided by every_nth. Feed it to VideoDiT Save Video to keep the speed.",
                       "Number of frames returned.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "video": (io_folders.list_input_files(_LOADABLE), {
                "video_upload": True,
                "tooltip": "A video or image in ComfyUI's input folder (standalone: "
                           "VIDEODIT_INPUT_DIR, default ./input). Upload adds files there. "
                           "Transparent pixels of a still (PNG/WebP/GIF alpha) are composited "
                           "over white; 16-bit grayscale is read at its full range."}),
            "skip_first_frames": ("INT", {
                "default": 0, "min": 0, "max": 1_000_000,
                "tooltip": "Source frames dropped from the start, before anything else."}),
            "frame_limit": ("INT", {
                "default": 0, "min": 0, "max": 100_000,
                "tooltip": "At most this many frames are returned (0 = all). Wan wants 4k+1, "
                           "e.g. 81."}),
            "every_nth": ("INT", {
                "default": 1, "min": 1, "max": 1000,
                "tooltip": "Keep every n-th frame (after fps resampling); the fps output is "
                           "divided by n so the clip keeps its speed."}),
            "force_fps": ("FLOAT", {
                "default": 0.0, "min": 0.0, "max": 240.0, "step": 0.001,
                "tooltip": "Resample to this frame rate by picking the nearest source frame "
                           "(no blending); 0 keeps the file's rate. Wan runs at 16."}),
            "size_multiple": ("INT", {
                "default": 16, "min": 1, "max": 512,
                "tooltip": "Width and height are made multiples of this (Wan: 16; Wan 2.2 5B: "
                           "32). 1 keeps the size."}),
            "size_mode": (list(decode.SIZE_MODES), {
                "default": "crop",
                "tooltip": "crop: cut the centre down to the multiple (at most multiple-1 "
                           "pixels). resize: scale to the nearest multiple (aspect changes "
                           "slightly). none: keep the file's size."}),
            "max_memory_gb": ("FLOAT", {
                "default": 0.0, "min": 0.0, "max": 1024.0, "step": 0.5,
                "tooltip": "Refuse (before decoding) clips whose frames would need more RAM "
                           "than this. 0 = VIDEODIT_MAX_DECODE_GB or 8 GB."}),
        }}

    def load(self, video, skip_first_frames=0, frame_limit=0, every_nth=1, force_fps=0.0,
             size_multiple=16, size_mode="crop", max_memory_gb=0.0):
        path = io_folders.resolve_input(video, input="video")
        clip = decode.load_clip(
            path,
            decode.FrameRange(int(skip_first_frames), int(frame_limit), int(every_nth),
                              float(force_fps)),
            decode.SizeRule(int(size_multiple), size_mode),
            budget_bytes=decode.decode_budget_bytes(float(max_memory_gb)), input="video",
            hooks=host_hooks())
        return (clip.images, clip.fps, int(clip.images.shape[0]))

    @classmethod
    def VALIDATE_INPUTS(cls, video):
        # Naming only `video` keeps ComfyUI's own range checks for the other widgets; the
        # list check is skipped for `video` so a freshly uploaded file is accepted.
        try:
            io_folders.resolve_input(video, input="video")
        except InputError as err:
            return str(err)
        return True

    @classmethod
    def IS_CHANGED(cls, video, **_):
        # Modification time and size, not a hash: hashing a long video on every queue is slow.
        path = io_folders.resolve_input(video, input="video")
        stat = os.stat(path)
        return f"{stat.st_mtime_ns}:{stat.st_size}"


@videodit_node("VideoDiTSaveVideo", "VideoDiT Save Video", "media")
class VideoDiTSaveVideo:
    DESCRIPTION = ("Save frames as mp4 (H.264), webm (VP9), gif, animated webp or a PNG "
                   "sequence in the output folder, under a new numbered name (never "
                   "overwrites). The prompt and workflow are embedded so ComfyUI can reload "
                   "the graph from the file where it supports that format.")
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("Full path of the written file (of the folder, for a PNG sequence).",)
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The frames to save."}),
                "fps": ("FLOAT", {
                    "default": 16.0, "min": 0.01, "max": 240.0, "step": 0.01,
                    "tooltip": "Playback frame rate (Wan: 16). GIF stores delays in 1/100 s, "
                               "so its rate is rounded per frame."}),
                "format": (list(encode.FORMATS), {
                    "default": "mp4",
                    "tooltip": "mp4: H.264 yuv420p, plays everywhere; odd widths/heights are "
                               "padded by one edge pixel. webm: VP9. gif: 256 colours per "
                               "frame. webp: animated, lossless at crf 0. png-sequence: a "
                               "folder of lossless PNG frames."}),
                "crf": ("INT", {
                    "default": 19, "min": 0, "max": encode.MAX_CRF,
                    "tooltip": "Quality, lower is better (H.264 crf: 0 best, 19 near "
                               "transparent, 23 default, 51 worst). VP9 uses crf*63/51; WebP "
                               "quality 100-crf (crf 0 = lossless). Ignored for gif and png."}),
                "filename_prefix": ("STRING", {
                    "default": "video/VideoDiT",
                    "tooltip": "Name (and optional sub/folders) inside the output folder; "
                               "files are numbered <prefix>_00001_.mp4, ... %width%, %height%, "
                               "%year% ... %second% are filled in."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, fps, filename_prefix):
        # Checked when queued, so a bad name or folder does not surface after the whole render.
        # Naming fps turns ComfyUI's own range check off for it: the range is checked here.
        found = []
        if fps is not None and not 0.01 <= float(fps) <= 240.0:  # NaN fails this too
            found.append(InputError(f"{fps} is not a frame rate from 0.01 to 240", input="fps",
                                    fix="use e.g. 16 (Wan)"))
        if filename_prefix is not None:
            try:
                io_folders.check_output_prefix(str(filename_prefix))
            except InputError as err:
                found.append(err)
        return "\n".join(map(str, found)) or True

    def save(self, images, fps, format, crf, filename_prefix, prompt=None, extra_pnginfo=None):
        # Checked before naming: the name may hold %width%, and a bad input makes no folder.
        images = encode.check_save(images, float(fps), format, int(crf))
        name = io_folders.reserve_output_name(filename_prefix, encode.EXTENSIONS[format],
                                              width=images.shape[2], height=images.shape[1])
        tags = workflow_tags(prompt, extra_pnginfo) if embed_workflow() else {}
        saved = encode.save_clip(images, float(fps), format, int(crf), name.folder,
                                 name.filenames(), tags, hooks=host_hooks())
        subfolder = name.subfolder  # of the shown files, as ComfyUI's /view looks them up
        if format == "png-sequence":
            subfolder = "/".join(part for part in (subfolder, saved.path.name) if part)
        entries = [{"filename": filename, "subfolder": subfolder, "type": "output"}
                   for filename in saved.files]
        animated = format != "png-sequence"
        return {"ui": {"images": entries, "animated": (animated,)}, "result": (str(saved.path),)}


NODE_CLASSES = [VideoDiTLoadVideo, VideoDiTSaveVideo]
