"""``python -m backend`` is the ``taskhub`` command."""

import sys

from backend.cli import main

sys.exit(main())
