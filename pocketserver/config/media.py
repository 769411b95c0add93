"""The media repository's settings (Synapse's key names), read by ``loader.parse_config``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from pocketserver.config.units import parse_duration_ms, parse_size

T = TypeVar("T")

# Synapse's default thumbnail_sizes: (width, height, method).
DEFAULT_THUMBNAIL_SIZES: tuple[tuple[int, int, str], ...] = (
    (32, 32, "crop"),
    (96, 96, "crop"),
    (320, 240, "scale"),
    (640, 480, "scale"),
    (800, 600, "scale"),
)


@dataclass(frozen=True, slots=True)
class UrlPattern:
    """One entry of ``url_preview_url_blacklist``: glob patterns per URL component.

    A URL is refused when every component named in the entry matches its pattern
    (a pattern starting with ``^`` is a regular expression, as in Synapse).
    """

    components: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class MediaConfig:
    """Settings of uploads, downloads, thumbnails and URL previews."""

    enable_media_repo: bool = True
    # Synapse's switch: true means the deprecated /_matrix/media/v3/download,
    # thumbnail, config and preview_url endpoints answer 404 (the default).
    enable_authenticated_media: bool = True
    dynamic_thumbnails: bool = False
    thumbnail_sizes: tuple[tuple[int, int, str], ...] = DEFAULT_THUMBNAIL_SIZES
    max_image_pixels: int = 32 * 1024 * 1024
    max_pending_media_uploads: int = 5
    unused_expiration_time_ms: int = 24 * 3_600_000
    local_media_lifetime_ms: int | None = None
    remote_media_lifetime_ms: int | None = None
    """Cached media of other servers not asked for in this long is deleted; None: kept."""
    max_spider_size: int = 10 * 1024 * 1024
    upload_quota_per_user: int | None = None
    """``media_upload_quota_per_user``: bytes of stored media per user; None: no quota."""
    url_preview_url_blacklist: tuple[UrlPattern, ...] = field(default=())
    remote_media_cache_size: int | None = None
    """Bytes of other servers' media kept cached; past it the least recently asked-for
    items are dropped. None: no cap (only ``remote_media_lifetime``)."""


_URL_COMPONENTS = frozenset(
    {
        "scheme",
        "netloc",
        "path",
        "params",
        "query",
        "fragment",
        "username",
        "password",
        "hostname",
        "port",
    }
)


def _thumbnail_sizes(value: object) -> tuple[tuple[int, int, str], ...]:
    if value is None:
        return DEFAULT_THUMBNAIL_SIZES
    if not isinstance(value, list):
        raise ValueError("expected a list of {width, height, method}")
    sizes: list[tuple[int, int, str]] = []
    for entry in value:
        if not isinstance(entry, dict):
            raise ValueError("expected a list of {width, height, method}")
        width, height = entry.get("width"), entry.get("height")
        method = entry.get("method", "scale")
        if (
            not isinstance(width, int)
            or not isinstance(height, int)
            or isinstance(width, bool)
            or isinstance(height, bool)
            or not (1 <= width <= 10_000 and 1 <= height <= 10_000)
            or method not in ("crop", "scale")
        ):
            raise ValueError("each size needs width and height (1-10000) and method crop or scale")
        if (width, height, method) not in sizes:
            sizes.append((width, height, method))
    return tuple(sizes)


def _url_blacklist(value: object) -> tuple[UrlPattern, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError("expected a list of mappings of URL components to patterns")
    patterns: list[UrlPattern] = []
    for entry in value:
        if not isinstance(entry, dict) or not entry:
            raise ValueError("expected a list of mappings of URL components to patterns")
        items: list[tuple[str, str]] = []
        for key, pattern in entry.items():
            if key not in _URL_COMPONENTS or not isinstance(pattern, str):
                raise ValueError(
                    f"unknown URL component {key!r} or non-string pattern; "
                    f"components: {', '.join(sorted(_URL_COMPONENTS))}"
                )
            items.append((key, pattern))
        patterns.append(UrlPattern(tuple(items)))
    return tuple(patterns)


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError("expected true or false")


def _pixels(value: object) -> int:
    size = parse_size(value)
    if size < 1:
        raise ValueError("expected a positive number of pixels")
    return size


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000:
        raise ValueError("expected a whole number from 1 to 10000")
    return value


def _positive_ms(value: object) -> int:
    ms = parse_duration_ms(value)
    if ms <= 0:
        raise ValueError("expected a duration longer than zero")
    return ms


def _opt_ms(value: object) -> int | None:
    return None if value is None else _positive_ms(value)


def _opt_quota(value: object) -> int | None:
    if value is None:
        return None
    size = parse_size(value)
    if size < 1:
        raise ValueError("expected a size such as 1G, or null for no limit")
    return size


class Section(Protocol):
    """What the loader's config section offers (``loader._Section``)."""

    def get(self, key: str, conv: Callable[[object], T], default: object) -> T: ...

    def section(self, key: str) -> Section: ...

    def finish(self, ignored: frozenset[str] = ...) -> None: ...


def parse_media_config(root: Section) -> MediaConfig:
    """Read the media keys of the top-level section ``root`` (and ``media_retention``)."""
    retention = root.section("media_retention")
    lifetime = retention.get("local_media_lifetime", _opt_ms, None)
    remote_lifetime = retention.get("remote_media_lifetime", _opt_ms, None)
    retention.finish()
    return MediaConfig(
        enable_media_repo=root.get("enable_media_repo", _bool, True),
        enable_authenticated_media=root.get("enable_authenticated_media", _bool, True),
        dynamic_thumbnails=root.get("dynamic_thumbnails", _bool, False),
        thumbnail_sizes=root.get("thumbnail_sizes", _thumbnail_sizes, None),
        max_image_pixels=root.get("max_image_pixels", _pixels, "32M"),
        max_pending_media_uploads=root.get("max_pending_media_uploads", _count, 5),
        unused_expiration_time_ms=root.get("unused_expiration_time", _positive_ms, "24h"),
        local_media_lifetime_ms=lifetime,
        remote_media_lifetime_ms=remote_lifetime,
        max_spider_size=root.get("max_spider_size", parse_size, "10M"),
        upload_quota_per_user=root.get("media_upload_quota_per_user", _opt_quota, None),
        remote_media_cache_size=root.get("remote_media_cache_size", _opt_quota, None),
        url_preview_url_blacklist=root.get("url_preview_url_blacklist", _url_blacklist, None),
    )
