"""Cycle-exact performance model of the core (see docs/core.md).

From the data of one sample (input spike events per timestep, non-zero dv per timestep
and lane) it predicts the cycles of every phase of every engine; the RTL tests assert
that the RTL's cycle counters equal these predictions exactly.
"""
