"""Device and memory policy, model folders, progress and interrupts.

This package is the one place that knows whether ComfyUI is present (:mod:`.host`). Everything
else asks it, so library code runs the same inside ComfyUI, in the CLI and in tests.
"""
