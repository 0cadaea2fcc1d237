"""`python -m serving_agent`: the same as `modelreg agent`."""

import sys

from serving_agent.cli import main

sys.exit(main())
