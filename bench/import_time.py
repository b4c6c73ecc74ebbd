"""How long ``import comfyui_videodit`` takes on top of an already-imported torch.

Target: < 0.3 s. Run: ``python bench/import_time.py`` (median of 7 fresh interpreters).
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys

CODE = ("import time, torch; t = time.perf_counter(); import comfyui_videodit; "
        "print(time.perf_counter() - t)")


def main() -> None:
    runs = [float(subprocess.run([sys.executable, "-c", CODE], check=True, capture_output=True,
                                 text=True).stdout) for _ in range(7)]
    print(json.dumps({"median_s": round(statistics.median(runs), 4),
                      "max_s": round(max(runs), 4), "target_s": 0.3}))


if __name__ == "__main__":
    main()
