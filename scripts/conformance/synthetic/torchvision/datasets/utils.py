"""Downloads cannot happen here: the archive helper only makes the folder."""

import os
from typing import Any


def download_and_extract_archive(url: str, download_root: str, **kwargs: Any) -> None:
    os.makedirs(download_root, exist_ok=True)
