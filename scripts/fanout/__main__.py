"""``python -m fanout``: the same as the ``fanout`` console script."""

from fanout.cli import main

raise SystemExit(main())
