"""Procedural video clips with captions, for training and scoring the bundled demo model.

- :mod:`.palette`: the named object and background colours;
- :mod:`.clips`: clip specifications (shapes, colours, motions, speeds), their rendering, seeded
  sampling and the held-out (colour, shape, motion) combinations kept for evaluation;
- :mod:`.captions`: the caption grammar with synonyms;
- :mod:`.detector`: colour segmentation and centroid tracking that reads a clip back into
  colours and motions, to score generated clips.
"""
