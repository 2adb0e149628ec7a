"""`python -m visit_counter COMMAND`: the `visit-counter` command."""

import sys

from visit_counter.cli.commands import main

sys.exit(main())
