"""Debug build option: performance counters and monitor ports, on in the regression, off
in board builds (``debug=False``), where they would cost about a quarter of a lean core."""

from __future__ import annotations

__all__ = ["counter_domain"]


class _Discard:
    """Stands in for ``m.d.sync`` when counters are off: statements added to it vanish."""

    def __iadd__(self, stmts):
        return self


def counter_domain(m, enabled: bool):
    """Where counter updates go: ``m.d.sync`` with counters on, nowhere with them off (the
    counter registers then keep their reset value 0 and synthesis removes them)."""
    return m.d.sync if enabled else _Discard()
