#!/usr/bin/env python
"""Django's command-line utility for the HRMS project."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> None:
    # The project lives inside taskhub's source tree: its root is on the path.
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.examples.hrms.project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
