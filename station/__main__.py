"""`python -m station ...`"""

import sys

from station.cli.main import main

sys.exit(main())
