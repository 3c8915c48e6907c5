"""A tiny raw HTTP client for emulator tests: no retries, no interpretation of codes."""

from __future__ import annotations

from typing import Any

import aiohttp


class Api:
    """Calls ``/api/v4`` routes and returns ``(http_status, parsed body)``."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base = base_url.rstrip("/")
        self.token = ""
        self.refresh_token = ""

    async def sign_in(self, email: str, password: str) -> dict[str, Any]:
        """Sign in with a password and keep the tokens; return the LoginResponse."""
        status, body = await self.call(
            "POST", "/session/token", json={"email": email, "password": password}, auth=False
        )
        assert status == 200, body
        assert body["code"] == 0, body
        self.token = body["data"]["token"]["access_token"]
        self.refresh_token = body["data"]["token"]["refresh_token"]
        return body["data"]  # type: ignore[no-any-return]

    def headers(self, auth: bool = True, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Return request headers, with the bearer token when signed in."""
        out = dict(extra or {})
        if auth and self.token:
            out["Authorization"] = f"Bearer {self.token}"
        return out

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
    ) -> tuple[int, Any]:
        """Send one request; the body is parsed as JSON when it is JSON, else returned as text."""
        url = path if path.startswith("http") else f"{self.base}/api/v4{path}"
        async with self.session.request(
            method,
            url,
            json=json,
            params=params,
            data=data,
            headers=self.headers(auth, headers),
            allow_redirects=False,
        ) as resp:
            raw = await resp.read()
            if resp.content_type == "application/json":
                import json as _json

                return resp.status, _json.loads(raw)
            return resp.status, raw.decode(errors="replace")

    async def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request that must succeed with code 0; return ``data`` (None when absent)."""
        status, body = await self.call(method, path, **kwargs)
        assert status == 200, (status, body)
        assert body["code"] == 0, body
        return body.get("data")

    async def upload(self, uri: str, content: bytes, **fields: Any) -> dict[str, Any]:
        """Upload ``content`` through a session and local chunks; return the session data."""
        sess = await self.ok(
            "PUT", "/file/upload", json={"uri": uri, "size": len(content), **fields}
        )
        size = sess["chunk_size"] or len(content) or 1
        chunks = [content[i : i + size] for i in range(0, len(content), size)] or [b""]
        for index, chunk in enumerate(chunks):
            await self.ok(
                "POST",
                f"/file/upload/{sess['session_id']}/{index}",
                data=chunk,
                headers={"Content-Type": "application/octet-stream"},
            )
        return sess  # type: ignore[no-any-return]

    async def download(self, uri: str) -> bytes:
        """Fetch a file's bytes through ``POST /file/url``."""
        data = await self.ok("POST", "/file/url", json={"uris": [uri]})
        async with self.session.get(data["urls"][0]["url"]) as resp:
            assert resp.status == 200, resp.status
            return await resp.read()
