"""fmbook: the library behind *Enhancing Foundation Models, reproduced*.

The book's notebooks are thin: they explain, call this library and plot. The library has three layers:

* ``fmbook.book``: the book's machinery (chapter registry, parameter profiles, runner, results with
  provenance, the notebook API ``nb``, text-notebook sync, the book build and its status page, CLI);
* ``fmbook.core``: parts every chapter shares (offline assets, datasets, language / vision /
  vision-language models, statistics, claims, tables, plotting, the federated-learning core);
* one module or package per chapter (``nmtune``, ``emotion_prompt``, ``atlas``, ...).

Imports point one way: chapters use ``fmbook.core``; ``fmbook.core`` imports neither chapters nor the
machinery; the machinery imports no chapter module.
"""

__version__ = "0.1.0"

import os as _os

# Tokenizers' thread pool would fork-warn in every notebook that also uses DataLoader workers.
_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
