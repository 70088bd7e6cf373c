import sys

from multimix.cli import main

sys.exit(main())
