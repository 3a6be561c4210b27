"""``python -m medimg``: the same as the ``medimg`` command."""

import sys

from medimg.cli import main

sys.exit(main())
