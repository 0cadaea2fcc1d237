"""`python -m registry_server`: the same as `modelreg server`."""

import sys

from registry_server.cli import main

sys.exit(main())
