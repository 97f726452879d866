"""The docs cannot drift from the code: the flag table is what app/config.py declares."""

from __future__ import annotations

import re

from helpers import ROOT

from app import config

BEGIN, END = "<!-- flags: generated from app/config.py; a test checks it -->", "<!-- /flags -->"


def test_the_flag_table_in_the_docs_is_the_declared_settings():
    text = (ROOT / "docs" / "training.md").read_text()
    found = re.search(re.escape(BEGIN) + r"\n(.*?)" + re.escape(END), text, re.DOTALL)
    assert found, f"docs/training.md lost its {BEGIN} ... {END} block"
    assert found.group(1).strip() == config.flag_table().strip(), \
        "the flag table differs from app/config.py: put `python -m app.config` between its markers"


def test_the_readme_links_only_to_docs_that_exist():
    readme = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / target).is_file(), target
