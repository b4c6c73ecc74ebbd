"""Frame-consistency post-pass and temporal quality metrics."""
