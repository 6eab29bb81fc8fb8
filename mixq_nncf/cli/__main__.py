"""`python -m mixq_nncf.cli ...` (used under torchrun)."""
import sys

from . import main

sys.exit(main())
