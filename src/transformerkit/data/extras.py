"""Packages that one data source or score needs, kept out of the core install (pyproject's extras):
``rdata`` (R's serialized data; it pulls pandas and xarray) for the Austen corpus, scikit-learn
(and SciPy) for the classification scores, its stop-word list and its bundled digits.
:func:`optional_module` imports one or says in one line which extra installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

from transformerkit.data.parallel import DataError


def optional_module(name: str, extra: str, purpose: str) -> ModuleType:
    """``import name``, or :class:`DataError` naming the extra that installs it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise DataError(f"{purpose} needs {name.split('.')[0]}: pip install 'transformerkit[{extra}]'") from None
