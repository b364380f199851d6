"""Data building: corpora of melody lines (the music21 corpus, a folder of MIDI files) written
as the dataset file (`symdiff.dataset`), and the cached latent dataset the diffusion model trains on.
Imports inference modules, never training or evaluation (symdiff/__init__.py)."""
