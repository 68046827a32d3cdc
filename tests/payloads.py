"""Malicious pickle payloads for the safe-loading tests (test_checkpoint.py, test_tokenizer.py).

Each object pickles to a call that creates the file `marker` when plain `pickle.load` unpickles it; a test feeds the
pickle to a loader, expects a refusal, and checks that `marker` was not created.
"""
from __future__ import annotations

import builtins
import os
from pathlib import Path


class RunsShell:
    """Unpickles to os.system("touch <marker>"): a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Evals:
    """Unpickles to builtins.eval of Python that creates <marker>."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return builtins.eval, (f"open({str(self.marker)!r}, 'w').close()",)
