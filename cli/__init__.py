"""Command line: run workflow JSON headless, and queue batches on ComfyUI servers."""
