"""symdiff: symbolic music generation with latent diffusion (Mittal et al., ISMIR 2021)."""
import contextlib
import io

__version__ = "0.1.0"

# pyfluidsynth prints "'fluidsynth' was found at ..." to stdout on import whenever $CI is set, and
# note_seq's pretty_midi imports it. Import it once here, silenced, so the CLI's stdout (JSON
# included) stays exactly what symdiff writes.
with contextlib.redirect_stdout(io.StringIO()):
    try:
        import fluidsynth  # noqa: F401
    except (ImportError, OSError):
        pass
