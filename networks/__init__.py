"""nn.Module definitions (Wan DiT, Wan VAE, umT5, CLIP vision). No I/O."""
