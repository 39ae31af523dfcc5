"""NumPy's floating-point warnings off inside the Dask graphs that xpsoftmax builds.

For a Dask array the generic implementation only builds a graph; the arithmetic runs later,
when the user computes, on whatever scheduler and thread (or process) they pick. An
``errstate`` around the call therefore covers nothing. :func:`quiet` rewrites the graph
instead: every task that the call created runs under ``numpy.errstate(all="ignore")``, the
tasks of the inputs' graphs (the user's own computations) are left exactly as they were.

How, on Dask's ``HighLevelGraph``:

* the call's layers are those of the result's graph that are not in an input's graph;
* each of them gets a new name (deterministic: ``key_split(name)`` and a token of the old name),
  so that the rewritten tasks never share a key with an unwrapped twin that a user may compute
  in the same graph (Dask keeps one task per key);
* a ``Blockwise`` layer stays a lazy ``Blockwise`` layer (its one template task is wrapped, so
  the cost does not grow with the number of chunks and blockwise fusion still applies); any
  other layer is materialised and each of its tasks wrapped;
* a task-spec node (``dask._task_spec.Task``, its nested tasks included) becomes
  ``Task(key, _QuietNode(node, deps), *refs to deps)``: the whole node, nested tasks first,
  is evaluated under the errstate; an old-style tuple task ``(func, *args)`` becomes
  ``(_QuietFunc(func), *args)``, recursively for the tuple tasks nested in its arguments.

Both wrappers are module-level classes, so the tasks pickle (``scheduler="processes"``,
distributed). Nothing here is imported by ``import xpsoftmax``; Dask and NumPy are imported
when a graph is rewritten or a task runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["quiet"]

#: Mixed into the token of every new layer name.
_SEED = "xpsoftmax.quiet"


class _QuietNode:
    """Evaluates a task-spec node (with the tasks nested in it) under errstate(all="ignore").

    The node keeps its own dependency keys: ``keys[i]`` is the key under which the node reads
    the ``i``-th positional value (the outer task passes them, possibly renamed).
    """

    __slots__ = ("keys", "node")

    def __init__(self, node: Any, keys: tuple[Any, ...]) -> None:
        self.node = node
        self.keys = keys

    def __call__(self, *values: Any) -> Any:
        import numpy

        with numpy.errstate(all="ignore"):
            return self.node(dict(zip(self.keys, values)))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_QuietNode, (self.node, self.keys))

    def __dask_tokenize__(self) -> object:
        return (_SEED, self.node, self.keys)

    def __repr__(self) -> str:
        return f"quiet({self.node!r})"


class _QuietFunc:
    """Calls ``func`` under errstate(all="ignore") (for old-style tuple tasks)."""

    __slots__ = ("func",)

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import numpy

        with numpy.errstate(all="ignore"):
            return self.func(*args, **kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_QuietFunc, (self.func,))

    def __dask_tokenize__(self) -> object:
        return (_SEED, self.func)

    def __repr__(self) -> str:
        return f"quiet({self.func!r})"


def quiet(result: Any, inputs: Any) -> Any:
    """``result`` with the tasks that built it from ``inputs`` run under errstate(all="ignore").

    Parameters
    ----------
    result : dask array or tuple
        What a generic xpsoftmax call returned for Dask input: one Dask array, or a tuple of
        them (``logsumexp(..., return_sign=True)``, ``cross_entropy_with_grad``). Entries that
        are not Dask collections are returned as they are.
    inputs : object
        The arguments of that call: Dask arrays, or tuples, lists, dicts and dataclasses
        (``Temperature``) holding them, e.g. ``(plan.args, plan.kwargs)``. The layers of their
        graphs are the user's and are left untouched; every other layer of ``result``'s graph
        is the call's and is rewritten.

    Returns
    -------
    dask array or tuple
        Same structure, chunks, dtype and meta; new (deterministic) names for the rewritten
        layers. Nothing is computed. Without a ``HighLevelGraph`` (Dask's experimental
        array-expression mode) ``result`` comes back unchanged.
    """
    from dask.base import is_dask_collection
    from dask.highlevelgraph import HighLevelGraph

    outs = result if isinstance(result, tuple) else (result,)
    colls = [o for o in outs if is_dask_collection(o)]
    if not colls:
        return result
    graphs = [o.__dask_graph__() for o in colls]
    if not all(isinstance(g, HighLevelGraph) for g in graphs):
        return result
    graph = graphs[0] if len(graphs) == 1 else HighLevelGraph.merge(*graphs)

    known: set[Any] = set()
    _input_layer_names(inputs, known, 0)
    new = [name for name in graph.layers if name not in known]
    if not new:
        return result
    rewriter = _Rewriter(graph, new, known)
    hlg = rewriter.rewrite()
    ren = rewriter.ren

    rebuilt = []
    for o in outs:
        if not is_dask_collection(o):
            rebuilt.append(o)
            continue
        layers = [ren.get(name, name) for name in o.__dask_layers__()]
        rebuild, args = o.__dask_postpersist__()
        rebuilt.append(rebuild(hlg.cull_layers(layers), *args, rename=ren))
    return tuple(rebuilt) if isinstance(result, tuple) else rebuilt[0]


def _input_layer_names(obj: Any, acc: set[Any], depth: int) -> None:
    """Add the layer names of the graphs of the Dask collections inside ``obj`` to ``acc``."""
    from dask.base import is_dask_collection
    from dask.highlevelgraph import HighLevelGraph

    if depth > 20:
        return
    if is_dask_collection(obj):
        g = obj.__dask_graph__()
        if isinstance(g, HighLevelGraph):
            acc.update(g.layers)
        else:
            acc.update(_key_name(k) for k in g)
        acc.update(obj.__dask_layers__())
    elif isinstance(obj, (tuple, list, set, frozenset)):
        for item in obj:
            _input_layer_names(item, acc, depth + 1)
    elif isinstance(obj, dict):
        for item in obj.values():
            _input_layer_names(item, acc, depth + 1)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for field in dataclasses.fields(obj):
            _input_layer_names(getattr(obj, field.name), acc, depth + 1)


def _key_name(key: Any) -> Any:
    """The name part of a Dask key (``"x"`` of ``("x", 0, 1)``), or None for other values."""
    if type(key) is tuple:
        return key[0] if key and type(key[0]) is str else None
    return key if type(key) is str else None


def _new_name(name: str) -> str:
    from dask.base import tokenize
    from dask.utils import key_split

    return f"{key_split(name)}-{tokenize(name, _SEED)}"


class _Rewriter:
    """Renames and wraps the layers ``new`` of ``graph`` (one call of :func:`quiet`)."""

    def __init__(self, graph: Any, new: list[Any], known: set[Any]) -> None:
        from dask.blockwise import Blockwise

        Alias, DataNode, GraphNode, Task, TaskRef = _task_spec()
        self.graph = graph
        self.new = new
        self.known = known
        self.Alias, self.DataNode, self.GraphNode = Alias, DataNode, GraphNode
        self.Task, self.TaskRef, self.Blockwise = Task, TaskRef, Blockwise
        #: old name -> new name, for the layers and the names of their keys
        self.ren: dict[Any, str] = {}
        #: keys that are plain strings, renamed where they appear in old-style tasks
        self.str_keys: set[str] = set()
        #: materialised non-Blockwise layers
        self.dicts: dict[Any, dict[Any, Any]] = {}
        for name in new:
            layer = graph.layers[name]
            self._name(name, known)
            if self._lazy(layer):
                self._name(layer.output, known)
                continue
            dsk = dict(layer)
            self.dicts[name] = dsk
            for key in dsk:
                self._name(_key_name(key), known)
                if type(key) is str and key not in known:
                    self.str_keys.add(key)

    def _lazy(self, layer: Any) -> bool:
        """Whether ``layer`` is rewritten as a lazy Blockwise layer (else: materialised)."""
        return type(layer) is self.Blockwise and isinstance(getattr(layer, "task", None), self.Task)

    def _name(self, name: Any, known: set[Any]) -> None:
        if type(name) is str and name not in known and name not in self.ren:
            self.ren[name] = _new_name(name)

    def rewrite(self) -> Any:
        from dask.highlevelgraph import HighLevelGraph

        ren = self.ren
        layers = dict(self.graph.layers)
        deps = {k: set(v) for k, v in self.graph.dependencies.items()}
        for name in self.new:
            layer = layers.pop(name)
            layer_deps = deps.pop(name)
            new_layer = self._blockwise(layer) if self._lazy(layer) else self._dict(name, layer)
            layers[ren[name]] = new_layer
            deps[ren[name]] = layer_deps
        for name, layer_deps in deps.items():
            deps[name] = {ren.get(d, d) for d in layer_deps}
        return HighLevelGraph(layers, deps)

    # --- keys --------------------------------------------------------------------------

    def key(self, key: Any) -> Any:
        """``key`` renamed if it is a key of one of the new layers."""
        if type(key) is tuple:
            if key and type(key[0]) is str:
                name = self.ren.get(key[0])
                if name is not None:
                    return (name, *key[1:])
            return key
        if type(key) is str:
            return self.ren.get(key, key)
        return key

    # --- layers ------------------------------------------------------------------------

    def _blockwise(self, layer: Any) -> Any:
        TaskRef, GraphNode = self.TaskRef, self.GraphNode
        indices = []
        for arg, ind in layer.indices:
            if ind is not None and type(arg) is str:
                arg = self.ren.get(arg, arg)
            elif isinstance(arg, TaskRef):
                new_key = self.key(arg.key)
                arg = arg if new_key == arg.key else TaskRef(new_key)
            elif isinstance(arg, GraphNode):
                arg = self.node(arg, None)
            indices.append((arg, ind))
        output = self.ren[layer.output]
        return self.Blockwise(
            output,
            layer.output_indices,
            self.node(layer.task, output),
            indices,
            {self.ren.get(k, k): v for k, v in layer.numblocks.items()},
            concatenate=layer.concatenate,
            new_axes=layer.new_axes,
            output_blocks=layer.output_blocks,
            annotations=layer.annotations,
            io_deps=layer.io_deps,
        )

    def _dict(self, name: Any, layer: Any) -> Any:
        from dask.highlevelgraph import MaterializedLayer

        out = {}
        for key, value in self.dicts[name].items():
            if _key_name(key) in self.known:
                out[key] = value  # a key of an input's graph that this layer repeats
                continue
            new_key = self.key(key)
            if isinstance(value, self.GraphNode):
                out[new_key] = self.node(value, new_key)
            else:
                out[new_key] = self.legacy(value)
        return MaterializedLayer(
            out,
            annotations=layer.annotations,
            collection_annotations=layer.collection_annotations,
        )

    # --- tasks -------------------------------------------------------------------------

    def node(self, node: Any, key: Any) -> Any:
        """A task-spec node with renamed references, under key ``key`` (None: its own)."""
        Task = self.Task
        if isinstance(node, self.DataNode):
            return node if key is None or key == node.key else self.DataNode(key, node.value)
        if isinstance(node, self.Alias):
            return self.Alias(node.key if key is None else key, self.key(node.target))
        if isinstance(node, Task):
            deps = tuple(sorted(node.dependencies, key=str))
            # (Dask < 2025.1 has no data producers: there the flag would reach the function.)
            flag = {"_data_producer": True} if getattr(node, "data_producer", False) else {}
            return Task(
                node.key if key is None else key,
                _QuietNode(node, deps),
                *[self.TaskRef(self.key(d)) for d in deps],
                **flag,
            )
        # Another kind of GraphNode: rename its references, nothing to wrap.
        subs = {d: self.key(d) for d in node.dependencies}
        return node.substitute({k: v for k, v in subs.items() if k != v}, key=key)

    def legacy(self, obj: Any) -> Any:
        """An old-style task, key reference or literal, renamed and wrapped recursively."""
        t = type(obj)
        if t is tuple:
            if not obj:
                return obj
            if callable(obj[0]):
                return (_QuietFunc(obj[0]), *[self.legacy(a) for a in obj[1:]])
            new_key = self.key(obj)
            if new_key is not obj:
                return new_key
            return _rebuilt(obj, [self.legacy(a) for a in obj], tuple)
        if t is list:
            return _rebuilt(obj, [self.legacy(a) for a in obj], list)
        if t is dict:
            values = [self.legacy(v) for v in obj.values()]
            if all(a is b for a, b in zip(values, obj.values())):
                return obj
            return dict(zip(obj, values))
        if t is str:
            return self.ren[obj] if obj in self.str_keys else obj
        if isinstance(obj, self.TaskRef):
            new_key = self.key(obj.key)
            return obj if new_key == obj.key else self.TaskRef(new_key)
        if isinstance(obj, self.GraphNode):
            return self.node(obj, None)
        return obj


class _Never:
    """Stands in for the task-spec classes on a Dask without them (nothing is an instance)."""


def _task_spec() -> tuple[Any, ...]:
    """``(Alias, DataNode, GraphNode, Task, TaskRef)`` of this Dask's task spec.

    ``dask._task_spec`` holds them from Dask 2024.12 (``dask.task_spec`` re-exports them in
    recent releases, but was another module before). An older Dask has old-style tuple tasks
    only: every new layer is then materialised and its tuple tasks wrapped.
    """
    import importlib

    names = ("Alias", "DataNode", "GraphNode", "Task", "TaskRef")
    for module in ("dask._task_spec", "dask.task_spec"):
        try:
            ts = importlib.import_module(module)
        except ImportError:
            continue
        if all(hasattr(ts, name) for name in names):
            return tuple(getattr(ts, name) for name in names)
    return (_Never,) * len(names)


def _rebuilt(old: Any, items: list[Any], typ: Callable[[Iterable[Any]], Any]) -> Any:
    """``old`` itself when no item changed, else ``typ(items)``."""
    if all(a is b for a, b in zip(items, old)):
        return old
    return typ(items)
