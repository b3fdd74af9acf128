"""``python -m mlm_pretrain ...`` (so ``accelerate launch -m mlm_pretrain pretrain ...`` works)."""
import sys

from .cli import main

sys.exit(main())
