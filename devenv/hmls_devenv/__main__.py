import sys

from hmls_devenv.cli import main

sys.exit(main(prog="python -m hmls_devenv"))
