"""``msgspec``, imported without ``typing_extensions`` (every command that reads a record
imports it: CLI start-up is a measured figure).

msgspec takes ``get_type_hints``, ``Required`` and ``NotRequired`` from
``typing_extensions`` when that is installed (other packages of the
environment bring it), else from ``typing``, which has them all from Python
3.11 on and which the records' annotations use. ``typing_extensions`` imports
``inspect`` with ``ast``, ``dis`` and ``tokenize``: ~4-5 ms of a quiet host's
CPU, a third of msgspec's import, on the path of ``run --from-snapshot``
before QEMU starts. It is hidden while msgspec is imported only: anything
that imports it later gets it as usual.
"""

import sys

if "msgspec" not in sys.modules and "typing_extensions" not in sys.modules:
    sys.modules["typing_extensions"] = None  # type: ignore[assignment]  # (ImportError)
    try:
        import msgspec  # noqa: F401
    finally:
        del sys.modules["typing_extensions"]
