"""The ESSA runtime behind ``essa-train``: one master (rank 0) holding the strategy, worker ranks
scoring candidates on their own engines, small typed messages between them. Entry:
``launch.main``; the modules are listed in docs/runtime.md.
"""

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_FAILURE = 3
EXIT_REQUEUE = 75  # EX_TEMPFAIL: interrupted by SIGTERM/SIGUSR1 after a checkpoint; resume later
