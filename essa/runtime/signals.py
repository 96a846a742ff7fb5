"""Stop requests from the batch system: SIGTERM (abandon the generation now) and SIGUSR1 (finish
it first). Either way the run exits with EXIT_REQUEUE after its last checkpoint."""

from __future__ import annotations

import signal


class StopFlag:
    """Set by the signal handlers, read by the generation loop."""

    def __init__(self):
        self.signal_name = ""
        self.abandon = False

    @property
    def requested(self) -> bool:
        return bool(self.signal_name)

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handler(abandon=True))
        signal.signal(signal.SIGUSR1, self._handler(abandon=False))

    def _handler(self, abandon: bool):
        def handle(signum, frame):  # runs in the main thread between bytecodes: set flags only
            self.signal_name = signal.Signals(signum).name
            self.abandon = self.abandon or abandon
        return handle


def ignore_stop_signals() -> None:
    """Workers: mpirun forwards signals to every rank; only the master decides when to stop."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
