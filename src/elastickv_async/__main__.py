"""``python -m elastickv_async``."""

from ._core.cli import main

raise SystemExit(main())
