"""A static web site on an origin of its own, for pages that count themselves on the service.

The service under test answers at http://127.0.0.1:<its port>; the site at
http://localhost:<another port>. Host and port both differ, so Chromium treats every request
from a site page to the service as cross-origin, as it is for a real web site. Both names are
loopback, so no private-network rule stands in between.
"""

from __future__ import annotations

import functools
import html
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class _SiteHandler(SimpleHTTPRequestHandler):
    """Files from the site's directory, never cached (a test may rewrite a page), unlogged."""

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test's output is the service's and pytest's."""


class StaticSite:
    """Serves the files of `root` on a free loopback port, from a background thread."""

    def __init__(self, root: Path) -> None:
        self.root = root
        handler = functools.partial(_SiteHandler, directory=str(root))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="static-site", daemon=True
        )

    @property
    def origin(self) -> str:
        return f"http://localhost:{self._server.server_address[1]}"

    def url(self, name: str) -> str:
        return f"{self.origin}/{name}"

    def write(self, name: str, content: str) -> str:
        """Write the file `name` (e.g. "index.html") under the site's root; return its URL."""
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        return self.url(name)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def html_document(title: str, body: str) -> str:
    """A minimal page around `body`. Its empty icon keeps Chromium from asking the site for
    /favicon.ico, a 404 that would show in the console as an error."""
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<title>{html.escape(title)}</title>\n<link rel="icon" href="data:,">\n</head>\n'
        f"<body>\n{body}\n</body>\n</html>\n"
    )
