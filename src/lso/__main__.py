"""``python -m lso`` is the ``lso`` command."""
from lso.cli import main

raise SystemExit(main())
