"""Model families (Wan first): recognising, loading and running a family's diffusion models,
and the patchable model object that flows between nodes (VIDEODIT_MODEL)."""
