"""ComfyUI-VideoDiT: open video diffusion transformers (Wan 2.1 / 2.2) as ComfyUI nodes.

ComfyUI imports this file by path from ``custom_nodes/<any folder>/``; pip installs the same
tree as the package ``comfyui_videodit``. Importing it is cheap: no torch work, no file scans.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__version__ = "0.1.0"
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
