"""Site routes (contract 9.1): version ping and the public site configuration sections."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from emulator.core import ok, state
from emulator.session import current_user, user_json

routes = web.RouteTableDef()
_THUMB_EXTS = ["jpg", "jpeg", "png", "gif", "bmp", "webp", "tiff", "heic"]


@routes.get("/api/v4/site/ping")
async def ping(request: web.Request) -> web.Response:
    """Answer the server version string."""
    return ok(state(request).config.server_version)


@routes.get("/api/v4/site/config/{section}")
async def site_config(request: web.Request) -> web.Response:
    """Answer one configuration section; unknown sections fall back to ``basic``."""
    st = state(request)
    section = request.match_info["section"]
    body: dict[str, Any]
    if section == "login":
        body = {"register_enabled": True}
    elif section == "explorer":
        body = {
            "max_batch_size": 3000,
            "file_viewers": [],
            "default_viewer_mapping": {},
            "icons": "",
            "map_provider": "openstreetmap",
            "thumbnail_width": 400,
            "thumbnail_height": 300,
            "custom_props": [],
        }
    elif section == "thumb":
        body = {"thumb_exts": _THUMB_EXTS}
    elif section == "emojis":
        body = {"emoji_preset": ""}
    elif section == "app":
        body = {}
    else:
        body = {
            "instance_id": st.store.instance_id,
            "title": "Cloudreve",
            "themes": "{}",
            "default_theme": "#1976d2",
            "user": user_json(st, current_user(request)),
            "logo": "/static/img/logo.svg",
            "logo_light": "/static/img/logo_white.svg",
            "captcha_type": "normal",
        }
    return ok(body)
