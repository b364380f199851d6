"""Data building: corpora of melody lines (the music21 corpus, a folder of MIDI files), the
dataset file and its views, and the cached latent dataset the diffusion model trains on.
Imports inference modules, never training or evaluation (symdiff/__init__.py)."""
