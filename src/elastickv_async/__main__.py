"""``python -m elastickv_async``.

Worker processes load this file again as their main module (``anyio.to_process`` does, to
find functions defined there): hence the absolute import, and ``main`` only when run.
"""

from elastickv_async._core.entry import main

if __name__ == "__main__":
    raise SystemExit(main())
