"""Flow-matching schedules, solvers, guidance, the denoising loop and edit modes."""
