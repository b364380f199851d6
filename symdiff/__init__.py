"""symdiff: symbolic music generation with latent diffusion (Mittal et al., ISMIR 2021).

Layers, each importing only from those before it (ARCHITECTURE.md; `tests/test_layers.py`
checks it):

1. inference, the modules directly in this package: tokens (`melody`, `arrangement`), the VAE
   (`vae`), the codec (`codec`: scaler, silence rule, codec config), the models (`transformer`,
   `diffusion`, `baselines`), the samplers (`schedulers`), the pipeline (`generate`), the one
   checkpoint format (`checkpoint`), foundations (`errors`, `atomic`, `precision`), what the
   app draws and plays (`pianoroll`, `audio`), and what it measures against real music: the
   dataset file and its windows (`dataset`) and the paper's metrics (`metrics`). None imports a
   subpackage, so `import symdiff.generate` (and the app) loads no data-building, training or
   evaluation code.
2. `symdiff.data`: building corpora and datasets (music21 corpus, MIDI folders, the latent dataset).
3. `symdiff.train`: the training loop, DDP, resumable checkpoints, one objective per model.
   `symdiff.evaluation` stands beside it (Table 1, Figure 3, fidelity, coherence): it may use
   data, never training.
4. The app and the command: `demo` (what the Gradio app computes) and `cli`.
"""
__version__ = "0.1.0"
