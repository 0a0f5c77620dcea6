"""The `rtmo` subcommands: each module defines `add_arguments(parser)` and `run(args) -> exit
status`, and imports nothing heavy (torch, cv2, pycocotools) until `run`, so `rtmo --help` stays
fast."""
