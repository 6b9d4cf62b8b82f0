"""fmbook: the library behind *Enhancing Foundation Models, reproduced*.

The notebooks of the book are thin: they explain, call this library and plot. Method code lives in
one module per paper (``nmtune``, ``emotion_prompt``, ...); the shared parts are the runner
(``runner``), parameter profiles (``profiles``), the results store with provenance (``results``),
the notebook-side API (``nb``), model and data assets (``assets``), plotting style (``plotting``),
seeding and device selection (``seeding``).
"""

__version__ = "0.1.0"

# Set for every import of the library: model and data loading never reaches a hub in the
# offline profiles, and a stray download attempt fails fast instead of hanging.
import os as _os

_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
