"""The top-level package: lazy names resolve to the documented objects in any import order."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Each snippet imports the names in a different order, in a fresh interpreter, so that a
# submodule imported first cannot shadow a function of the same package-level name.
ORDERS = [
    "from dropkit import ConversionReport, convert",
    "from dropkit import convert, ConversionReport",
    "import dropkit.conversion; from dropkit import convert",
    "import dropkit; dropkit.ConversionReport; convert = dropkit.convert",
]


@pytest.mark.parametrize("imports", ORDERS)
def test_convert_is_the_function_in_any_import_order(imports):
    code = f"{imports}\nimport inspect\nassert inspect.isfunction(convert), convert\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_listed_name_resolves():
    import dropkit

    for name in dropkit.__all__:
        assert getattr(dropkit, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dropkit.nope  # noqa: B018


def test_importing_the_layers_does_not_load_the_compiler():
    # torch._dynamo costs ~1.5 s to import; dropkit loads it only when a stream is first made.
    code = (
        "import sys, dropkit.nn, dropkit.functional, dropkit.rng\n"
        "assert 'torch._dynamo' not in sys.modules\n"
        "with dropkit.rng.stream(1):\n    pass\n"
        "assert 'torch._dynamo' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
