"""`python -m rtmo` is the `rtmo` command."""

import sys

from rtmo.cli import main

sys.exit(main())
