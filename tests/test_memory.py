"""What keeps the idle server small: optional modules stay unimported, routes are shared.

Untimed guards of the properties behind the idle RSS figure of
``tests/bench/bench_foundation.py``.
"""

from __future__ import annotations

import gc
import json
import re
import subprocess
import sys
from pathlib import Path

from pocketserver.app import create_app
from pocketserver.config.log_settings import LogSettings
from pocketserver.server import settle_memory
from tests.harness import make_config

OPTIONAL_MODULES = ("httpx", "httpcore", "anyio", "PIL")
"""Imported on first use only (push delivery, URL previews, thumbnails): each costs
megabytes of resident memory that a server which never uses them should not pay.
(netaddr, the design card's IP-range library, is imported at start: the config's
ranges are checked with it. It costs about 1 MB.)"""

_START_AND_LIST_MODULES = """
import json, sys
from functools import partial
from pathlib import Path

import trio

from pocketserver.config import load_config
from pocketserver.server import serve


async def main() -> None:
    config = load_config(Path(sys.argv[1]))
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, config, shutdown=shutdown))
        loaded = sorted({name.split(".")[0] for name in sys.modules})
        shutdown.set()
    print(json.dumps(loaded))


trio.run(main)
"""


def test_a_started_server_has_not_imported_the_optional_modules(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", _START_AND_LIST_MODULES, str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "pocketserver" in loaded  # the listing itself works
    assert loaded.isdisjoint(OPTIONAL_MODULES), sorted(loaded & set(OPTIONAL_MODULES))


class _Config:
    max_request_body_size = 1_000_000
    logs = LogSettings()


class _Services:
    config = _Config()


def test_each_client_route_is_one_rule_for_both_prefixes() -> None:
    app = create_app(_Services(), ("client",))  # type: ignore[arg-type]
    rules = [rule.rule for rule in app.url_map.iter_rules()]
    shared = [r for r in rules if r.startswith("/_matrix/client/<any(v3, r0):")]
    assert len(shared) > 50
    # No route registered once per prefix: that doubles the routing table's memory.
    assert not [r for r in rules if re.match(r"/_matrix/client/(v3|r0)/", r)]
    adapter = app.url_map.bind("localhost")
    for prefix in ("v3", "r0"):
        endpoint, args = adapter.match(f"/_matrix/client/{prefix}/sync", method="GET")
        assert endpoint == "sync.sync_client"
        assert args == {"_client_prefix": prefix}


def test_settle_memory_freezes_what_start_up_built() -> None:
    try:
        settle_memory()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
