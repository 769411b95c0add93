"""Media keys of homeserver.yaml, and the headers of served media."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pocketserver.config import ConfigError, parse_config
from pocketserver.config.generate import sample_config_text
from pocketserver.config.media import DEFAULT_THUMBNAIL_SIZES, UrlPattern
from pocketserver.media.headers import content_disposition, is_inline, media_headers


def parse(**overrides: object):  # type: ignore[no-untyped-def]
    data = yaml.safe_load(sample_config_text())
    data.update(overrides)
    return parse_config(data, Path("/srv"))


def test_defaults_match_synapse() -> None:
    config = parse()
    media = config.media
    assert media.enable_authenticated_media is True  # legacy unauthenticated download off
    assert media.thumbnail_sizes == DEFAULT_THUMBNAIL_SIZES
    assert media.dynamic_thumbnails is False
    assert media.max_image_pixels == 32 * 1024 * 1024
    assert media.local_media_lifetime_ms is None
    assert config.url_preview_enabled is False
    assert config.warnings == ()


def test_values_are_read() -> None:
    config = parse(
        enable_authenticated_media=False,
        dynamic_thumbnails=True,
        thumbnail_sizes=[{"width": 10, "height": 20, "method": "crop"}, {"width": 5, "height": 5}],
        max_image_pixels="4M",
        max_pending_media_uploads=2,
        unused_expiration_time="1h",
        media_retention={"local_media_lifetime": "30d", "remote_media_lifetime": "7d"},
        max_spider_size="1M",
        remote_media_cache_size="2G",
        url_preview_url_blacklist=[{"netloc": "*.local"}, {"scheme": "http", "path": "/x*"}],
    )
    m = config.media
    assert not m.enable_authenticated_media
    assert m.dynamic_thumbnails
    assert m.thumbnail_sizes == ((10, 20, "crop"), (5, 5, "scale"))
    assert m.max_image_pixels == 4 * 1024 * 1024
    assert m.max_pending_media_uploads == 2
    assert m.unused_expiration_time_ms == 3_600_000
    assert m.local_media_lifetime_ms == 30 * 86_400_000
    assert m.remote_media_lifetime_ms == 7 * 86_400_000
    assert m.remote_media_cache_size == 2 * 1024**3
    assert m.max_spider_size == 1024 * 1024
    assert m.url_preview_url_blacklist == (
        UrlPattern((("netloc", "*.local"),)),
        UrlPattern((("scheme", "http"), ("path", "/x*"))),
    )
    assert config.warnings == ()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("enable_authenticated_media", "maybe"),
        ("thumbnail_sizes", [{"width": 0, "height": 5}]),
        ("thumbnail_sizes", [{"width": 5, "height": 5, "method": "stretch"}]),
        ("thumbnail_sizes", "big"),
        ("max_image_pixels", "lots"),
        ("max_pending_media_uploads", 0),
        ("unused_expiration_time", "0s"),
        ("media_retention", {"local_media_lifetime": "soon"}),
        ("url_preview_url_blacklist", [{"host": "x"}]),
        ("url_preview_url_blacklist", ["*.local"]),
    ],
)
def test_bad_values_name_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        parse(**{key: value})


def test_content_disposition() -> None:
    assert content_disposition("image/png", None) == "inline"
    assert content_disposition("IMAGE/PNG; x=y", "a.png") == "inline; filename=a.png"
    assert content_disposition("text/html", "a.html") == "attachment; filename=a.html"
    assert content_disposition("image/svg+xml", "a.svg") == "attachment; filename=a.svg"
    assert content_disposition("application/octet-stream", 'a"b\r\n.txt') == (
        "attachment; filename*=utf-8''a%22b%0D%0A.txt"
    )
    assert content_disposition("text/plain", "../../x") == ("inline; filename*=utf-8''..%2F..%2Fx")
    assert not is_inline("text/javascript")
    assert not is_inline("application/xhtml+xml")
    headers = media_headers("text/html", None, 5)
    assert headers["Content-Length"] == "5"
    assert "sandbox" in headers["Content-Security-Policy"]


def test_upload_quota() -> None:
    assert parse().media.upload_quota_per_user is None  # the sample's null: no quota
    assert parse(media_upload_quota_per_user="1G").media.upload_quota_per_user == 1024**3
    assert parse(media_upload_quota_per_user=5000).media.upload_quota_per_user == 5000
    for bad in (0, "0M", "lots", -1, True):
        with pytest.raises(ConfigError, match="media_upload_quota_per_user"):
            parse(media_upload_quota_per_user=bad)


def test_outbound_ip_ranges() -> None:
    from pocketserver.config.model import DEFAULT_IP_RANGE_BLACKLIST

    sample = parse()
    assert sample.ip_range_blacklist == DEFAULT_IP_RANGE_BLACKLIST
    assert sample.ip_range_whitelist == ()
    # Absent keys: the same defaults (a config written before these keys existed).
    data = yaml.safe_load(sample_config_text())
    del data["ip_range_blacklist"], data["ip_range_whitelist"]
    old = parse_config(data, Path("/srv"))
    assert old.ip_range_blacklist == DEFAULT_IP_RANGE_BLACKLIST
    assert old.ip_range_whitelist == ()
    # The default is what url previews use in the sample config.
    assert set(DEFAULT_IP_RANGE_BLACKLIST) == set(sample.url_preview_ip_range_blacklist)
    custom = parse(ip_range_blacklist=["10.0.0.0/8"], ip_range_whitelist=["10.1.0.0/16"])
    assert (custom.ip_range_blacklist, custom.ip_range_whitelist) == (
        ("10.0.0.0/8",),
        ("10.1.0.0/16",),
    )
    for key in ("ip_range_blacklist", "ip_range_whitelist"):
        with pytest.raises(ConfigError, match=key):
            parse(**{key: ["not-a-range"]})
