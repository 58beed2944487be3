"""``python -m elastickv_async``."""

from .cli import main

raise SystemExit(main())
