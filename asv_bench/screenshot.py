"""Screenshots of the published asv site (``asv publish`` first), to check it renders.

Serves ``asv_bench/html`` over HTTP (the site loads its data with requests, which ``file://``
forbids), opens the index page and one benchmark's graph page in headless Chromium, writes a
PNG of each and fails unless the graph page holds a plot canvas and its PNG is not blank.

The site loads jQuery, flot, bootstrap, stupidtable and md5 from CDNs; on a machine without
internet the server hands out Debian's copies instead (``apt-get install -y libjs-jquery
libjs-jquery-flot libjs-jquery-stupidtable node-blueimp-md5 libjs-bootstrap``), and an empty
script for flot's orderBars plugin, which only orders bars in bar charts.

Usage: ``python asv_bench/screenshot.py [--benchmark NAME] [--out DIR]``; needs Chromium
(Debian: ``apt-get install -y chromium``) and matplotlib (to read the PNGs back).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1400,1000",
    # The pages draw with JavaScript after loading their data: let them finish first.
    "--virtual-time-budget=15000",
]


# CDN file name -> Debian's copy.
DEBIAN_JS = Path("/usr/share/javascript")
LOCAL = {
    "jquery-3.3.1.min.js": DEBIAN_JS / "jquery/jquery.min.js",
    "jquery.flot.min.js": DEBIAN_JS / "jquery-flot/jquery.flot.min.js",
    "jquery.flot.time.min.js": DEBIAN_JS / "jquery-flot/jquery.flot.time.min.js",
    "jquery.flot.selection.min.js": DEBIAN_JS / "jquery-flot/jquery.flot.selection.min.js",
    "jquery.flot.categories.min.js": DEBIAN_JS / "jquery-flot/jquery.flot.categories.min.js",
    "stupidtable.min.js": DEBIAN_JS / "jquery-stupidtable/stupidtable.min.js",
    "md5.min.js": DEBIAN_JS / "blueimp-md5/md5.min.js",
    "bootstrap.min.js": DEBIAN_JS / "bootstrap/js/bootstrap.min.js",
    "bootstrap.min.css": DEBIAN_JS / "bootstrap/css/bootstrap.min.css",
    "jquery.flot.orderBars.js": None,  # not packaged: an empty script
}
CDN_TAG = re.compile(r'(src|href)="https://[^"]*/([^"/]+)"( integrity="[^"]*")?')


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the site, with CDN references of index.html replaced by local copies."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?")[0].split("#")[0]
        if path in ("/", "/index.html"):
            html = (Path(self.directory) / "index.html").read_text()
            self._reply(CDN_TAG.sub(self._local, html).encode(), "text/html")
        elif path.startswith("/_vendor/") and path[9:] in LOCAL:
            local = LOCAL[path[9:]]
            kind = "text/css" if path.endswith(".css") else "text/javascript"
            self._reply(local.read_bytes() if local else b"", kind)
        else:
            super().do_GET()

    @staticmethod
    def _local(match: re.Match[str]) -> str:
        name = match.group(2)
        if name in LOCAL and (LOCAL[name] is None or LOCAL[name].exists()):
            return f'{match.group(1)}="/_vendor/{name}"'
        return match.group(0)

    def _reply(self, body: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def chromium(args: list[str]) -> str:
    """Run headless Chromium with a fresh profile; return its stdout."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        sys.exit("Chromium not found: apt-get install -y chromium")
    with tempfile.TemporaryDirectory(prefix="asv-shot-") as profile:
        proc = subprocess.run(
            [exe, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
    if proc.returncode != 0:
        sys.exit(f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def distinct_colours(png: Path) -> int:
    """How many distinct colours the image has (a blank page has one or two)."""
    import matplotlib.image
    import numpy as np

    pixels = matplotlib.image.imread(png)[..., :3].reshape(-1, 3)
    return len(np.unique((pixels * 255).astype(np.uint8), axis=0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--html", type=Path, default=HERE / "html", help="published site")
    parser.add_argument("--out", type=Path, default=HERE / "screenshots", help="PNG folder")
    parser.add_argument("--benchmark", help="graph page to shoot (default: the first one)")
    args = parser.parse_args()
    index = args.html / "index.json"
    if not index.exists():
        sys.exit(f"{index} is missing: run 'asv publish' in asv_bench/ first")
    benchmark = args.benchmark or sorted(json.loads(index.read_text())["benchmarks"])[0]
    args.out.mkdir(parents=True, exist_ok=True)

    handler = functools.partial(Handler, directory=str(args.html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/index.html"
    try:
        pages = {"index": base, "graph": f"{base}#{benchmark}"}
        for name, url in pages.items():
            png = args.out / f"{name}.png"
            chromium([f"--screenshot={png}", url])
            colours = distinct_colours(png)
            print(f"{name}: {png} ({colours} colours) <- {url}")
            if colours < 16:
                sys.exit(f"{png} looks blank")
        dom = chromium(["--dump-dom", pages["graph"]])
        if "<canvas" not in dom or benchmark not in dom:
            sys.exit(f"the graph page of {benchmark} has no plot canvas")
        print(f"graph page of {benchmark} rendered a plot canvas")
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
