import sys

from dcb_store.cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
