"""The one base class of the errors a user can cause (a bad file, range, setting or path), so
the CLI and the app catch a single type and show its message, never a class name or traceback."""
from __future__ import annotations


class SymdiffError(ValueError):
    """A problem with the user's input or files, told in one line that names what is wrong.
    A ValueError, so code that caught the older ValueError subclasses keeps working."""
