"""On PYTHONPATH, makes every Python process (subprocesses too) import fulmen for Lightning's names.

FULMEN_ALIAS_CALLERS (folders, os.pathsep-separated): code there may import names fulmen lacks, as
placeholders that raise when called (so a project runs as far as its use of them, and the names are listed).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import lightning_alias  # noqa: E402

lightning_alias.install([p for p in os.environ.get("FULMEN_ALIAS_CALLERS", "").split(os.pathsep) if p])
