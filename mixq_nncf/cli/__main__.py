"""`python -m mixq_nncf.cli ...` (used under torchrun)."""
import sys

from mixq_nncf.cli import main

sys.exit(main())
