"""Backing off a loop whose step fails, with one log line per outage.

The background loops (worker scheduling, maintenance, the event hub, the webhook
deliverer) keep running through a database outage: each failed step waits longer
than the last (exponential, capped, with jitter, so that many processes do not
reconnect in step), the first failure is logged and the recovery is, the steps in
between are not.
"""

from __future__ import annotations

import logging
import random

from taskgate.core.errors import Unavailable


class Backoff:
    def __init__(
        self,
        what: str,
        log: logging.Logger,
        *,
        first: float = 0.1,
        cap: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        self._what = what
        self._log = log
        self._first = first
        self._cap = cap
        self._rng = rng or random.Random()
        self.failures = 0

    def failed(self, exc: BaseException) -> float:
        """Record a failed step; the seconds to wait before the next one.

        The database being unavailable is logged once per outage, without a
        traceback; any other error (a bug) is logged with its traceback every time.
        """
        self.failures += 1
        if not isinstance(exc, Unavailable):
            self._log.error("%s failed; retrying", self._what, exc_info=exc)
        elif self.failures == 1:
            self._log.warning("%s: %s Retrying until it answers.", self._what, exc)
        delay = min(self._cap, self._first * 2.0 ** (self.failures - 1))
        return delay * self._rng.uniform(0.5, 1.0)

    def succeeded(self) -> None:
        """Record a step that worked (logs the recovery after failures)."""
        if self.failures:
            self._log.info("%s: working again after %d failed tries", self._what, self.failures)
            self.failures = 0
