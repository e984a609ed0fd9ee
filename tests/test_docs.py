"""docs/: the architecture map names every module, and the docs cite only files that exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "fulmen"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# one row may stand for a folder of one-class modules; everything else is named file by file
FOLDER_ROWS = ("callbacks/", "loggers/", "utilities/")
_REPO_PATH = re.compile(r"(?<![\w/.-])((?:docs|src|tests|examples|benchmarks|scripts)/[\w./-]*\w)")
_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


def test_every_module_is_on_the_architecture_map():
    text = (ROOT / "docs" / "architecture.md").read_text()
    cited = set(re.findall(r"[\w/]+\.py", text)) | set(re.findall(r"`(\w+/)`", text))
    missing = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        folder = rel.rsplit("/", 1)[0] + "/" if "/" in rel else ""
        if rel not in cited and not (folder in FOLDER_ROWS and folder in cited):
            missing.append(rel)
    assert missing == [], f"docs/architecture.md does not map {missing}: add a row for each"


def test_the_docs_cite_only_files_that_exist():
    broken = []
    for doc in DOCS:
        text = doc.read_text()
        for cited in _REPO_PATH.findall(text):
            if "*" not in cited and not (ROOT / cited).exists():
                broken.append(f"{doc.name}: {cited}")
        for link in _LINK.findall(text):
            if "://" not in link and not (doc.parent / link).exists():
                broken.append(f"{doc.name}: ({link})")
    assert broken == []
