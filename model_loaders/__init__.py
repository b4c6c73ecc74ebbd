"""Model files to ready networks: safetensors (mmap), format detection, key renames, dtype and fp8."""
