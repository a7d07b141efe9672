"""A browser's session against a running TransferLab, with nothing but http.client.

Benchmarks drive the real server the way a user does: log in through the login form (CSRF
cookie and token), then post forms with the session. A file is streamed from disk in chunks,
so a zip of hundreds of MB never sits in the benchmark's memory.
"""

from __future__ import annotations

import http.client
import re
import urllib.parse
import uuid
from pathlib import Path

CHUNK = 1 << 20


class Session:
    """Cookies of one logged-in user on 127.0.0.1:`port`."""

    def __init__(self, port: int, timeout: float = 300) -> None:
        self.port = port
        self.timeout = timeout
        self.cookies: dict[str, str] = {}

    def _connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)

    def _keep_cookies(self, response: http.client.HTTPResponse) -> None:
        for header in response.msg.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        if "csrftoken" in self.cookies:
            headers["X-CSRFToken"] = self.cookies["csrftoken"]
        return {**headers, **(extra or {})}

    def login(self, username: str, password: str) -> None:
        conn = self._connection()
        try:
            conn.request("GET", "/accounts/login/")
            response = conn.getresponse()
            page = response.read().decode()
            self._keep_cookies(response)
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
            if token is None:
                raise RuntimeError("no CSRF token on the login page")
            form = urllib.parse.urlencode(
                {"username": username, "password": password, "csrfmiddlewaretoken": token.group(1)}
            )
            conn.request(
                "POST",
                "/accounts/login/",
                body=form,
                headers=self._headers({"Content-Type": "application/x-www-form-urlencoded"}),
            )
            response = conn.getresponse()
            response.read()
            self._keep_cookies(response)
        finally:
            conn.close()
        if response.status != 302 or "sessionid" not in self.cookies:
            raise RuntimeError(f"login as {username!r} failed (HTTP {response.status})")

    def post_file(self, path: str, field: str, file: Path, content_type: str = "application/zip") -> tuple[int, str]:
        """POST one file as multipart, streamed from disk; the status and the Location header."""
        boundary = uuid.uuid4().hex
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{file.name}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        conn = self._connection()
        try:
            conn.putrequest("POST", path)
            headers = self._headers(
                {
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                    "Content-Length": str(len(head) + file.stat().st_size + len(tail)),
                }
            )
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders()
            conn.send(head)
            with file.open("rb") as handle:
                while chunk := handle.read(CHUNK):
                    conn.send(chunk)
            conn.send(tail)
            response = conn.getresponse()
            response.read()
            return response.status, response.getheader("Location", "")
        finally:
            conn.close()
