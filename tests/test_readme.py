"""Every relative link of README.md resolves, anchors included, as a code host
renders it: the README is the front page and points into docs/."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file (and explicit ``<a id>``s)."""
    text = prose(path.read_text())
    found: set[str] = set(re.findall(r'<a id="([^"]+)">', text))
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(f"{slug}-{count}" if count else slug)
    return found


def readme_links() -> list[str]:
    return [
        link
        for link in LINK.findall(prose((ROOT / "README.md").read_text()))
        if not re.match(r"[a-z]+:", link)  # https:, mailto: are not ours to check
    ]


def test_the_readme_has_relative_links() -> None:
    assert len(readme_links()) > 5


def test_every_relative_link_of_the_readme_resolves() -> None:
    broken = []
    for link in readme_links():
        target, _, anchor = link.partition("#")
        path = (ROOT / target) if target else ROOT / "README.md"
        if not path.exists():
            broken.append(f"{link}: no {target}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{link}: no heading #{anchor} in {target or 'README.md'}")
    assert not broken, "\n".join(broken)


def test_a_broken_anchor_is_noticed() -> None:
    assert "requirements" in anchors(ROOT / "README.md")
    assert "no-such-heading" not in anchors(ROOT / "README.md")
