"""Peak RAM while loading a Wan DiT file: our loader vs the naive way.

Writes a ~500 MB random fp16 file in the original layout (Wan 1.3B width, 5 blocks), then in a
fresh subprocess per method loads it while a thread samples the process's RSS with psutil every
2 ms. Reported: peak RSS minus the RSS just before loading, divided by the file's tensor bytes.
Target for ours: <= 1.2x.

Methods: ``ours`` (``load_wan_dit``, meta-device network, tensors read one at a time, assigned);
``ours-bf16`` (same file cast to bf16 on load); ``naive`` (``safetensors.torch.load_file`` into a
network built normally on the CPU, then ``load_state_dict``: two copies).

Run: ``python bench/dit_load_memory.py``. Record the table in bench/README.md.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CONFIG = dict(dim=1536, ffn_dim=8960, num_heads=12, num_layers=5)


def write_file(path: Path) -> int:
    import torch
    from safetensors.torch import save_file

    from comfyui_videodit.networks.wan_dit import WanDiT, WanDiTConfig

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in WanDiT(WanDiTConfig(**CONFIG)).state_dict().items()}
    state = {k: torch.randn(s, dtype=torch.float16) * 0.02 for k, s in shapes.items()}
    save_file(state, path)
    return sum(v.numel() * v.element_size() for v in state.values())


def measure(method: str, path: str) -> dict:
    import psutil
    import torch

    from comfyui_videodit.model_loaders.wan_dit_loader import load_wan_dit
    from comfyui_videodit.networks.wan_dit import WanDiT, WanDiTConfig

    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = baseline
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    if method == "naive":
        from safetensors.torch import load_file

        network = WanDiT(WanDiTConfig(**CONFIG)).to(torch.float16)
        network.load_state_dict(load_file(path))
    else:
        network = load_wan_dit(path, "bf16" if method == "ours-bf16" else "default").network
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    peak = max(peak, process.memory_info().rss)
    held = sum(p.numel() * p.element_size() for p in network.parameters())
    return {"peak_mb": (peak - baseline) / 2**20, "held_mb": held / 2**20, "seconds": seconds}


def main() -> None:
    if len(sys.argv) == 3:
        print(json.dumps(measure(sys.argv[1], sys.argv[2])))
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "wan_random_fp16.safetensors"
        tensor_bytes = write_file(path)
        print(f"file: {tensor_bytes / 2**20:.0f} MB of fp16 tensors")
        print("| method | peak RSS over baseline (MB) | / file bytes | weights held (MB) | load s |")
        print("|---|---|---|---|---|")
        for method in ("ours", "ours-bf16", "naive"):
            out = subprocess.run([sys.executable, __file__, method, str(path)], check=True,
                                 capture_output=True, text=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            print(f"| {method} | {result['peak_mb']:.0f} | "
                  f"{result['peak_mb'] * 2**20 / tensor_bytes:.2f}x | {result['held_mb']:.0f} | "
                  f"{result['seconds']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
