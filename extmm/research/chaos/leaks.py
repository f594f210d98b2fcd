"""Leak probes for long runs: trio tasks alive, and bytes the bot's object graph retains.

`retained_bytes` walks the object graph from trio's root task (every task's coroutine
frames and locals) and stops at the objects it is told to exclude (the simulator, the
checker) and at modules, classes and functions, so it measures the bot's own state; it
is blind to what the simulator keeps of ours (the venue remembers every externalId
forever, which an allocation-site count would blame on the bot).
"""

from __future__ import annotations

import gc
import sys
import types
from collections.abc import Callable, Iterable

import trio

_NOT_STATE = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.CodeType,
              types.MethodDescriptorType, types.WrapperDescriptorType, types.GetSetDescriptorType)


def count_tasks() -> int:
    """Trio tasks alive in this run, found from the root task down."""
    stack = [trio.lowlevel.current_root_task()]
    count = 0
    while stack:
        task = stack.pop()
        if task is None:
            continue
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


def retained_bytes(
    exclude: Iterable[object] = (),
    skip_types: tuple[type, ...] = (),
    bounded: Callable[[object], Iterable[object]] | None = None,
) -> int:
    """`sys.getsizeof` summed over objects reachable from the running tasks, minus
    `exclude` (and everything only reachable through it), instances of `skip_types`, what
    `bounded(obj)` names for each object visited (structures capped by design whose size
    wanders, e.g. the order book or a dedup window) and module-level state."""
    gc.collect()
    stop = {id(o) for o in exclude}
    # Module namespaces are global state, not the bot's: walking them would count everything.
    stop |= {id(vars(m)) for m in list(sys.modules.values()) if m is not None and hasattr(m, "__dict__")}
    stack: list[object] = [trio.lowlevel.current_root_task()]
    seen: set[int] = set()
    total = 0
    while stack:
        obj = stack.pop()
        key = id(obj)
        if key in seen or key in stop:
            continue
        seen.add(key)
        if isinstance(obj, _NOT_STATE) or isinstance(obj, skip_types):
            continue
        if bounded is not None:
            stop.update(id(o) for o in bounded(obj))
        total += sys.getsizeof(obj, 0)
        stack.extend(gc.get_referents(obj))
    return total
