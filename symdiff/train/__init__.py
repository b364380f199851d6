"""Training: the loop (DDP, precision, resumable checkpoints, logs), what every model on latent
windows shares, and one small objective and preset per model (VAE, diffusion, MDN)."""
