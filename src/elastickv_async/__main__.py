"""``python -m elastickv_async``."""

from ._core.entry import main

raise SystemExit(main())
