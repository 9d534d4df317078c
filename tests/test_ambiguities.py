"""core/ambiguities.py: every item of ../shared/paper/ambiguities.md is decided by a config key or fixed in code,
every mapped key exists, and the map agrees with experiments/README.md's table of which key decides which item."""
import re
from pathlib import Path

import pytest

from core.ambiguities import AMBIGUITY, FIXED, tag
from core.config import allowed_keys

REPO = Path(__file__).resolve().parent.parent
PAPER_LIST = REPO.parent / "shared" / "paper" / "ambiguities.md"


def _item(tag_: str) -> str:
    return re.match(r"A\d+", tag_).group(0)          # A15a -> A15


def test_every_mapped_key_exists_and_tags_the_protocol_line():
    assert set(AMBIGUITY) <= set(allowed_keys())
    assert tag("eval.ap_rule") == " [A15b]" and tag("eval.distance") == ""
    assert not {_item(t) for t in AMBIGUITY.values()} & set(FIXED)      # an item is switchable or fixed, not both


@pytest.mark.skipif(not PAPER_LIST.exists(), reason=f"{PAPER_LIST} not present (the paper folder sits beside the repo)")
def test_every_item_of_the_paper_list_is_mapped_or_fixed():
    items = {f"A{n}" for n in re.findall(r"^(\d+)\. \*\*", PAPER_LIST.read_text(encoding="utf-8"), re.M)}
    assert items, f"no numbered items found in {PAPER_LIST}"
    assert items == {_item(t) for t in AMBIGUITY.values()} - {"A17"} | set(FIXED)


def test_the_readme_table_agrees_with_the_map():
    text = (REPO / "experiments" / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (A\d+[ab]?) [^|]*\| ([^|]*) \|", text, re.M)
    assert rows, "experiments/README.md has no ambiguity table"
    listed = {key: item for item, keys in rows for key in re.findall(r"`([a-z_]+\.[a-z_0-9]+)`", keys)}
    assert listed.items() <= AMBIGUITY.items()
    assert {item for item, _ in rows} == set(AMBIGUITY.values())
