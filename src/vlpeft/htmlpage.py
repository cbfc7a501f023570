"""The claims report (markdown) as a self-contained HTML page, for Snakemake's ``--report`` and for a browser.

The markdown is rendered with markdown-it-py (CommonMark plus tables, raw HTML off) inside a page with a small
stylesheet: tables with rules and right-aligned numbers, a readable line length. Nothing is fetched from outside.
"""

from __future__ import annotations

import html

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; font-size: 15px; line-height: 1.45;
       max-width: 70rem; margin: 2rem auto; padding: 0 1rem; color: #1a1a1a; }
h1, h2, h3 { line-height: 1.2; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 13px; }
th, td { border: 1px solid #c8c8c8; padding: 0.2rem 0.5rem; vertical-align: top; }
th { background: #f0f0f0; }
td { font-variant-numeric: tabular-nums; }
code { background: #f4f4f4; padding: 0 0.2rem; }
"""


def markdown_page(markdown: str, title: str) -> str:
    """A complete HTML document showing ``markdown``.

    Args:
        markdown: CommonMark text with pipe tables (what :func:`vlpeft.report.claims_report` writes).
        title: The page's ``<title>``.
    """
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )
