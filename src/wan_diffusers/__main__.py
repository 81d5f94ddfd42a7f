"""`python -m wan_diffusers ...` (and `torchrun ... -m wan_diffusers generate ...`): the `wan-diffusers` command."""

import sys

from .cli import main

sys.exit(main())
