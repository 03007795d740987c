"""`python -m osvirt` is the `osvirt` command."""
from osvirt.cli import main

raise SystemExit(main())
