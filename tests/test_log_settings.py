"""Where logs go and the level of each request's access line (issue #15)."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pocketserver.config import ConfigError, parse_config
from pocketserver.config.log_settings import LogSettings
from pocketserver.logs import LogSetupError, access_line_level, setup_logging
from tests.test_config import minimal

BASE = Path("/srv/pocket")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if handler not in handlers:
            handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_defaults_keep_successful_requests_out_of_info() -> None:
    logs = parse_config(minimal(), BASE).logs
    assert logs == LogSettings()
    assert logs.access_level == "DEBUG"
    assert logs.access_slow_ms == 2000
    assert logs.file is None
    assert logs.config_file is None


def test_keys_are_read_and_relative_paths_follow_the_config() -> None:
    logs = parse_config(
        minimal(
            log_file="logs/pocket.log",
            log_file_max_size="1M",
            log_file_backup_count=7,
            access_log_level="info",
            access_log_slow_threshold="500ms",
        ),
        BASE,
    ).logs
    assert logs.file == BASE / "logs/pocket.log"
    assert (logs.file_max_size, logs.file_backup_count) == (1024 * 1024, 7)
    assert (logs.access_level, logs.access_slow_ms) == ("INFO", 500)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("access_log_level", "LOUD"),
        ("access_log_level", 10),
        ("access_log_slow_threshold", "soon"),
        ("log_file_max_size", "1K"),
        ("log_file_backup_count", -1),
        ("log_file_backup_count", True),
        ("log_file", 5),
    ],
)
def test_bad_values_are_refused_with_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        parse_config(minimal(**{key: value}), BASE)


def test_log_config_must_be_a_readable_dict_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="log_config: cannot read it"):
        parse_config(minimal(log_config=str(tmp_path / "absent.yaml")), BASE)
    bad = tmp_path / "bad.yaml"
    bad.write_text("handlers: []\n")
    with pytest.raises(ConfigError, match="version: 1"):
        parse_config(minimal(log_config=str(bad)), BASE)
    good = tmp_path / "log.yaml"
    good.write_text("version: 1\n")
    assert parse_config(minimal(log_config=str(good)), BASE).logs.config_file == good


def test_access_line_levels() -> None:
    default = LogSettings()
    assert access_line_level(default, 200, 5.0, 0) == logging.DEBUG
    assert access_line_level(default, 302, 5.0, 0) == logging.DEBUG
    assert access_line_level(default, 400, 5.0, 0) == logging.INFO
    assert access_line_level(default, 404, 1.0, 0) == logging.INFO
    assert access_line_level(default, 500, 1.0, 0) == logging.INFO
    assert access_line_level(default, 200, 2500.0, 0) == logging.INFO  # slow
    # A /sync that waited the 30 s it asked for is not slow; one 3 s later is.
    assert access_line_level(default, 200, 30_100.0, 30_000) == logging.DEBUG
    assert access_line_level(default, 200, 33_000.0, 30_000) == logging.INFO
    loud = LogSettings(access_level="INFO")
    assert access_line_level(loud, 200, 1.0, 0) == logging.INFO
    quiet = LogSettings(access_level="WARNING")
    assert access_line_level(quiet, 200, 1.0, 0) == logging.WARNING
    assert access_line_level(quiet, 500, 1.0, 0) == logging.WARNING


def test_log_file_is_rotated_by_size(tmp_path: Path, restore_logging: None) -> None:
    path = tmp_path / "sub" / "pocket.log"
    setup_logging("INFO", LogSettings(file=path, file_max_size=64 * 1024, file_backup_count=2))
    log = logging.getLogger("pocketserver.test_rotation")
    for i in range(3000):
        log.info("line %d %s", i, "x" * 60)
    log.debug("not at INFO")
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["pocket.log", "pocket.log.1", "pocket.log.2"]
    for p in path.parent.iterdir():
        assert p.stat().st_size <= 64 * 1024
    assert "line 2999 " in path.read_text()
    assert "not at INFO" not in path.read_text()


def test_log_file_in_an_unwritable_place_is_a_clear_error(
    tmp_path: Path, restore_logging: None
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(LogSetupError, match="log_file"):
        setup_logging("INFO", LogSettings(file=blocker / "pocket.log"))


def test_log_config_is_applied(tmp_path: Path, restore_logging: None) -> None:
    out = tmp_path / "access-only.log"
    document = {
        "version": 1,
        "formatters": {"plain": {"format": "%(name)s %(levelname)s %(message)s"}},
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "filename": str(out),
                "formatter": "plain",
            }
        },
        "loggers": {"pocketserver.access": {"level": "DEBUG", "handlers": ["file"]}},
        "disable_existing_loggers": False,
    }
    config = tmp_path / "log.yaml"
    config.write_text(yaml.safe_dump(document))
    setup_logging("INFO", LogSettings(config_file=config))
    logging.getLogger("pocketserver.access").debug("req-1 GET /x 200 1.0ms -")
    logging.getLogger("pocketserver.access").handlers[0].flush()
    assert out.read_text() == "pocketserver.access DEBUG req-1 GET /x 200 1.0ms -\n"
    for handler in logging.getLogger("pocketserver.access").handlers:
        handler.close()
    logging.getLogger("pocketserver.access").handlers.clear()


def test_a_synapse_log_config_names_what_cannot_load(
    tmp_path: Path, restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "log.yaml"
    config.write_text(
        "version: 1\n"
        "filters:\n"
        "  context:\n"
        "    (): synapse.logging.context.LoggingContextFilter\n"
        "handlers:\n"
        "  console:\n"
        "    class: logging.StreamHandler\n"
        "    filters: [context]\n"
        "root:\n"
        "  handlers: [console]\n"
    )
    # Synapse is installed in the test venv: hide it, as on a pocketserver box.
    monkeypatch.setitem(sys.modules, "synapse", None)
    monkeypatch.delitem(sys.modules, "synapse.logging.context", raising=False)
    with pytest.raises(LogSetupError, match="Synapse's own logging classes"):
        setup_logging("INFO", LogSettings(config_file=config))
