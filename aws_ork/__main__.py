"""Allow ``python -m aws_ork``."""

import sys

from aws_ork.cli import main

sys.exit(main())
