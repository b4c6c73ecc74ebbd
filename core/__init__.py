"""What every stage shares and nothing owns: latent formats and their preview colours, the
conditioning that flows between nodes, prompt cleaning, the callbacks a long call reports to,
and how a network's weights are placed on a device. Imports nothing else of the pack."""
