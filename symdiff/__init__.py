"""symdiff: symbolic music generation with latent diffusion (Mittal et al., ISMIR 2021)."""
__version__ = "0.1.0"
