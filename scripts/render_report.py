"""Render a report as a reader sees it: headless Chromium (Debian's ``chromium`` package) takes a screenshot of its
first screen and of the whole page, so a person can check that the answer is on the first screen.

    python scripts/render_report.py STUDY_OR_REPORT [--out DIR] [--width 1280] [--height 900]

STUDY_OR_REPORT is a study folder (its ``report.html``), an evaluation folder, or an HTML file. Writes
``first_screen.png`` (width × height, what opens) and ``page.png`` (the whole page, up to 12,000 px) into DIR
(default: beside the report).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def chromium() -> str:
    """The Chromium executable on PATH (``chromium``, ``chromium-browser`` or ``google-chrome``).

    Returns
    -------
    str
        its path.

    Raises
    ------
    SystemExit
        with a one-line message when none is installed.
    """
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("render_report: no Chromium on PATH; install Debian's chromium package (apt-get install "
                     "chromium)")


def screenshot(page: Path, png: Path, width: int, height: int) -> Path:
    """One headless-Chromium screenshot of ``page`` at ``width`` × ``height`` CSS pixels into ``png``.

    Parameters
    ----------
    page : Path
        the HTML file.
    png : Path
        the PNG to write.
    width : int
        window width in pixels.
    height : int
        window height in pixels.

    Returns
    -------
    Path
        ``png``.
    """
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={png}", page.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
    return png


def page_height(page: Path) -> int:
    """A generous estimate of the page's height in pixels (tables rows, figures), capped at 12,000.

    Parameters
    ----------
    page : Path
        the HTML file.

    Returns
    -------
    int
        pixels.
    """
    text = page.read_text(encoding="utf-8")
    return min(12000, 600 + 28 * text.count("<tr>") + 700 * text.count("<img") + 40 * text.count("<li>"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args()
    page = args.report / "report.html" if args.report.is_dir() else args.report
    if not page.is_file():
        print(f"render_report: {page}: no such report", file=sys.stderr)
        return 2
    out = args.out or page.parent
    out.mkdir(parents=True, exist_ok=True)
    first = screenshot(page, out / "first_screen.png", args.width, args.height)
    whole = screenshot(page, out / "page.png", args.width, page_height(page))
    print(f"{first}\n{whole}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
