"""`python -m ffcompile.bench ...`: the harness's own command line."""
import sys

from .harness import main

sys.exit(main())
