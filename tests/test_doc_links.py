"""Every relative link of README.md and docs/ leads somewhere: its file exists and, for a link to a
heading (`page.md#anchor`), the page has that heading, by GitHub's anchor rule (lowercased,
punctuation but `-` and `_` dropped, spaces as `-`; a repeated heading gets `-1`, `-2`, ...).
Links in code spans and fenced blocks are code, not links."""

from __future__ import annotations

import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
FENCED = re.compile(r"^```.*?^```", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *#*$", re.M)


def anchor(heading: str) -> str:
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: pathlib.Path) -> set[str]:
  seen: dict[str, int] = {}
  found = set()
  for match in HEADING.finditer(FENCED.sub("", page.read_text(encoding="utf-8"))):
    slug = anchor(match.group(1))
    count = seen.get(slug, 0)
    found.add(slug if count == 0 else f"{slug}-{count}")
    seen[slug] = count + 1
  return found


def relative_links(page: pathlib.Path) -> list[str]:
  text = CODE_SPAN.sub("", FENCED.sub("", page.read_text(encoding="utf-8")))
  return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_anchor_follows_githubs_rule():
  assert anchor("README's main job") == "readmes-main-job"
  assert anchor("Records read from a memory map (2026-11-29)") == (
      "records-read-from-a-memory-map-2026-11-29")
  assert anchor("3D-ResNeXt's stem: a fifth of its GPU step") == (
      "3d-resnexts-stem-a-fifth-of-its-gpu-step")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_lead_to_a_file_and_heading(page):
  broken = []
  for target in relative_links(page):
    path, _, fragment = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    if not dest.exists():
      broken.append(f"{target}: no file {dest}")
    elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
      broken.append(f"{target}: {dest.name} has no heading with anchor #{fragment}")
  assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)
