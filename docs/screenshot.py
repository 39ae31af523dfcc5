"""Screenshots of the built documentation with headless Chromium, for a visual check.

Usage (after building the site into docs/_build/html)::

    apt-get install -y chromium        # once (Debian)
    python docs/screenshot.py [--out /tmp/xpsoftmax-docs-shots] [page.html ...]

Writes one PNG per page (default: the home page, one API page, the performance page) under
``--out``, outside the repository; never commit them.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HTML = Path(__file__).resolve().parent / "_build" / "html"
PAGES = ["index.html", "api/xpsoftmax.softmax.html", "performance.html"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("Chromium not found: apt-get install -y chromium")


def shoot(browser: str, page: Path, png: Path, size: str) -> None:
    with tempfile.TemporaryDirectory(prefix="xpsoftmax-chromium-") as profile:
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--screenshot={png}",
                f"--window-size={size}",
                page.as_uri(),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="*", default=PAGES, help="pages relative to the site")
    parser.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "xpsoftmax-docs-shots"))
    parser.add_argument("--window-size", default="1280,1600")
    args = parser.parse_args()
    if not (HTML / "index.html").exists():
        sys.exit(f"no built site in {HTML}: build the docs first")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    browser = chromium()
    for page in args.pages:
        png = out / (page.replace("/", "_").removesuffix(".html") + ".png")
        shoot(browser, HTML / page, png, args.window_size)
        print(png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
