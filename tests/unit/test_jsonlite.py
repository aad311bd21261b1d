"""util/jsonlite.py answers as ``json`` does (it runs json's own C scanner and
string escaper), and leaves to ``json`` whatever it does not write itself."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from ignitevm.api import codec
from ignitevm.api.types import VM, ObjectMeta
from ignitevm.util import jsonlite
from tests.conftest import REPO


def _vm_record() -> bytes:
    vm = VM(metadata=ObjectMeta(name="wéb\u2028", uid="0123456789abcdef"))
    vm.status.running = True
    return (codec.to_json(vm) + "\n").encode()


DOCUMENTS = [
    _vm_record(),
    b'{"a": [1, 2.5, "x\\u00e9\xc3\xa9", true, null, NaN, -Infinity, 1e400, -0.0]}',
    b"12345678901234567890", b'  {}  \n', b"[]", b'"s"', b"\t1\r\n", b'{"k": 1, "k": 2}',
    b'{"a": {"b": [{}, [], {"c": "\\ud800", "d": "\\n\\"\\\\\\u0001"}]}}',
    b'{"return": {"status": "running", "singlestep": false, "running": true}}',
    b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}',
    # not JSON, or not plain UTF-8: json's own errors (or its answer)
    b"", b" ", b'{"a":1} x', b'{"a" 1}', b"[1,]", b'"\x01"', b'{"a": "\xff"}', b"[" * 100000,
    b"\xef\xbb\xbf{}", b'\xff\xfe{\x00}\x00', b'\x00{\x00}', b"nan", b"[01]", b"{'a': 1}",
    b'{"a": 1}\x00', b'"\\x"', b"1.5e", b"-", b"tru",
]


def _outcome(call: object, raw: bytes) -> tuple[str, object]:
    try:
        return "value", repr(call(raw))  # type: ignore[operator]
    except Exception as exc:
        return "error", type(exc)


@pytest.mark.parametrize("raw", DOCUMENTS)
def test_loads_is_json_loads(raw: bytes) -> None:
    assert _outcome(jsonlite.loads, raw) == _outcome(json.loads, raw)


@pytest.mark.parametrize("raw", [d for d in DOCUMENTS if _outcome(json.loads, d)[0] == "value"])
def test_dumps_is_json_dumps(raw: bytes) -> None:
    value = json.loads(raw)
    assert jsonlite.dumps(value) == json.dumps(value, indent=2, ensure_ascii=False)


@pytest.mark.parametrize("value", [
    {"a": [1, {"b": []}, {}], "é\n": "\u2028\x7f\ud800"}, [[[]], [{}]], "", 0, -1, True, None,
    {"f": [0.1, 1e16, 1.5e-7, math.inf, -math.inf, math.nan, -0.0, 2.0 ** 70]},
    {1: "int key"}, (1, 2), {"t": (1,)}, {"x": 1 + 2j},  # (json's: it writes or refuses these)
])
def test_dumps_of_anything_is_json_dumps(value: object) -> None:
    try:
        want: object = json.dumps(value, indent=2, ensure_ascii=False)
    except TypeError:
        want = TypeError
    try:
        got: object = jsonlite.dumps(value)
    except TypeError:
        got = TypeError
    assert got == want


def test_a_record_read_and_written_without_json() -> None:
    """A well-formed record costs no ``json`` (nor ``re``) import."""
    code = (
        "import sys\nfrom ignitevm.util import jsonlite\n"
        f"v = jsonlite.loads({_vm_record()!r})\n"
        "v['status']['paused'] = True\ntext = jsonlite.dumps(v)\n"
        "print(sorted({'json', 're', 'enum'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    assert out.strip() == "[]"
