"""`python -m zerograd ...` (what `torchrun -m zerograd` runs)."""
from zerograd.cli import main

raise SystemExit(main())
