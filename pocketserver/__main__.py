"""``python -m pocketserver`` and the entry point of pocket.pyz."""

import sys

from pocketserver.cli import main

sys.exit(main())
