"""``python -m comfyui_videodit ...``: the headless runner and the batch queue client."""
from .cli.main import main

raise SystemExit(main())
