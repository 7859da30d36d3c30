"""``python -m trackware.inspector [--host H] [--port P] [--token T]``."""

from __future__ import annotations

from ._cli import main

raise SystemExit(main())
