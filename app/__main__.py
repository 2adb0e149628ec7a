"""`python -m app COMMAND`: the `visit-counter` command under the seed's name."""

import sys

from visit_counter.cli.commands import main

sys.exit(main())
