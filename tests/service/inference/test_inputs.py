"""parse_instances: the simdjson fast path gives exactly the rows orjson gives, and refuses every body that
is not plain rows of numbers, so the exact path reports it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import orjson
import pytest

from service.errors import PayloadTooLarge, ServiceError, Unprocessable
from service.inference import inputs
from service.inference.inputs import _numeric_rows, parse_instances

NAMES = ["a", "b", "c"]


def via_orjson(body: bytes) -> np.ndarray:
    return np.array(orjson.loads(body)["instances"], dtype=np.float32)


@pytest.mark.parametrize("seed", range(5))
def test_the_fast_path_gives_the_same_float32_rows_as_orjson(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.normal(0, 10.0 ** rng.integers(-8, 9, size=(300, 3)), size=(300, 3))
    values[:4] = [[0, -0.0, 1], [123456789012345678, -7, 3e-39], [1e38, -3.4e38, 0.1], [1.0000001, 5e-324, 2]]
    cells = [
        [
            repr(v) if j else f"{v:.17e}" if i % 2 else f"{int(v) if abs(v) < 1e15 else v}"
            for j, v in enumerate(r)
        ]
        for i, r in enumerate(values.tolist())
    ]
    body = ('{"instances": [' + ",".join("[" + ", ".join(r) + "]" for r in cells) + "]}").encode()

    fast = _numeric_rows(body, 3, max_rows=1000)

    assert fast is not None and fast.dtype == np.float32
    assert np.array_equal(fast, via_orjson(body))
    assert np.array_equal(parse_instances(body, NAMES, max_rows=1000), via_orjson(body))


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [[1, 2, 3, 4], [5, 6]]}',  # ragged, with as many numbers as 2 rows of 3
        b'{"instances": [[[1], [2], [3]]]}',  # nested one level more
        b'{"instances": [[1, 2, 3], {"a": 1, "b": 2, "c": 3}]}',  # an object row
        b'{"instances": [[1, 2, null]]}',
        b'{"instances": [[1, 2, true]]}',
        b'{"instances": [[1, 2, "3"]]}',
        b'{"instances": [[1, 2, 1e400]]}',  # beyond float64
        b'{"instances": [[1, 2, 1e39]]}',  # beyond float32
        b'{"instances": [[1, 2, 18446744073709551616]]}',  # an integer beyond 64 bits
        b'{"instances": [[1, 2, 3]], "extra": 1}',
        b'{"instances": [[1, 2, 3]], "instances": [[4, 5, 6]]}',  # duplicate key: orjson keeps the last
        b'{"rows": [[1, 2, 3]]}',
        b'{"instances": []}',
        b'{"instances": [[1, 2, 3]]} trailing',
        b"[[1, 2, 3]]",
    ],
)
def test_the_fast_path_refuses_anything_but_plain_rows_of_numbers(
    body: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inputs, "SIMDJSON_MIN_BYTES", 0)  # small bodies skip the fast path altogether
    assert _numeric_rows(b'{"instances": [[1, 2, 3], [4, 5, 6]]}', 3, max_rows=1000) is not None
    assert _numeric_rows(body, 3, max_rows=1000) is None


def test_what_the_fast_path_refuses_still_gets_its_exact_answer() -> None:
    assert parse_instances(
        b'{"instances": [[1, 2, 3]], "instances": [[4, 5, 6]]}', NAMES, max_rows=9
    ).tolist() == [[4, 5, 6]]
    with pytest.raises(Unprocessable, match="expected 3 features, got 4 at row 0"):
        parse_instances(b'{"instances": [[1, 2, 3, 4], [5, 6]]}', NAMES, max_rows=9)
    with pytest.raises(Unprocessable, match=r"row 0, column 2 \('c'\)"):
        parse_instances(b'{"instances": [[1, 2, 1e39]]}', NAMES, max_rows=9)
    with pytest.raises(PayloadTooLarge, match="at most 1 rows per request, got 2"):
        parse_instances(b'{"instances": [[1, 2, 3], [4, 5, 6]]}', NAMES, max_rows=1)
    with pytest.raises(ServiceError):
        parse_instances(b'{"instances": [[1, 2, 3]]} trailing', NAMES, max_rows=9)


def test_numbers_near_float32s_limit_are_accepted_or_refused_without_a_warning() -> None:
    """The row checks let numpy overflow (a float32 cast, a float32 sum) instead of entering np.errstate on
    every request; what they then decide is exact, and numpy's overflow warning stays out of the server's log
    (a process of its own: pytest records warnings its own way)."""
    script = textwrap.dedent(
        """
        import numpy as np
        from service.errors import Unprocessable
        from service.inference.inputs import parse_instances
        names = ["a", "b", "c"]
        # Finite float32 numbers whose float32 sum overflows: the float64 sum decides, and they are kept.
        rows = parse_instances(b'{"instances": [[3.4e38, 3.4e38, 3e38]]}', names, max_rows=9)
        assert rows.tolist() == np.float32([[3.4e38, 3.4e38, 3e38]]).tolist(), rows
        big = ("[3.4e38, 1e39, 1]," * 200).rstrip(",")  # large enough for the simdjson path
        for body in (b'{"instances": [[1, -1e39, 3]]}', ('{"instances": [' + big + "]}").encode()):
            try:
                parse_instances(body, names, max_rows=1000)
            except Unprocessable as e:
                print(e.message)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)

    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.splitlines() == [
        "expected a finite number at row 0, column 1 ('b'), got -1e+39 (beyond float32's range of about ±3.4e38)",
        "expected a finite number at row 0, column 1 ('b'), got 1e+39 (beyond float32's range of about ±3.4e38)",
    ]
