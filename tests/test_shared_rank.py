"""utilities/shared_rank.py: lightning_utilities' rank_zero_only.rank is set, as importing Lightning sets it."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("lightning_utilities")

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def _rank_seen(code: str, rank: str) -> str:
    env = {**os.environ, "PYTHONPATH": SRC, "RANK": rank}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.parametrize(
    "code",
    [
        "import fulmen; from lightning_utilities.core.rank_zero import rank_zero_only as r; print(r.rank)",
        "from lightning_utilities.core.rank_zero import rank_zero_only as r; import fulmen; print(r.rank)",
    ],
    ids=["fulmen_first", "lightning_utilities_first"],
)
def test_rank_is_set_whichever_is_imported_first(code):
    # lightning-hydra-template's RankedLogger raises "The `rank_zero_only.rank` needs to be set before use"
    assert _rank_seen(code, "3") == "3"


def test_the_trainers_rank_reaches_lightning_utilities():
    code = (
        "from lightning_utilities.core.rank_zero import rank_zero_only as r; import fulmen as L; "
        "from fulmen.utilities import set_global_rank; set_global_rank(2); print(r.rank)"
    )
    assert _rank_seen(code, "0") == "2"
