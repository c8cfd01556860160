"""`python -m service` runs the groundqa command."""

import sys

from service.cli import main

sys.exit(main())
