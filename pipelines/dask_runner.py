"""`--runner DaskRunner`: Beam's Dask runner, translated so that our pipelines run whole on a
dask.distributed cluster and write what they write on every other runner.

Beam 2.77's DaskRunner (apache_beam.runners.dask) turns a pipeline into dask bags, but
- computes only the bag of the last transform it visits: sinks on other branches never run;
- puts every tagged output of a ParDo into one collection (dead letters among the rows);
- drops what `finish_bundle` outputs (our staging sink names its files there);
- computes a side input inside each task that reads it, re-running its upstream steps, files
  they write included, once per task;
- runs Reshuffle as nothing, so a job that starts from one element (a source folder) runs in
  one task on one worker;
- groups by Python's `hash`, which differs between worker processes for strings and bytes;
- runs a primitive it does not know (Read) as an identity: an empty output, silently.

This runner keeps Beam's options (DaskOptions: --dask_client_address, ...) and its overrides
(Create, GroupByKey, Flatten and Reshuffle replaced by primitives) and translates the graph
itself into dask tasks: a PCollection is a list of partitions (one task each, a list of
windowed values), a ParDo runs Beam's DoFnRunner over one partition (a bundle: setup, start,
process, finish, teardown) and returns its outputs by tag, side inputs are computed once as a
task of their own, GroupByKey and Reshuffle exchange partitions by a stable hash of the
encoded key (or round robin), and every PCollection nothing reads is computed. A transform it
cannot run (state and timers, splittable DoFns, Read) stops the run before any work, naming it.

Limits: a partition (a bundle) is held in memory, input and outputs, as a list; the number of
partitions after a Reshuffle or GroupByKey is the cluster's thread count when the run starts
(or --dask_npartitions). Staged files pass between workers by path: on a cluster of several
machines --output must be storage they all reach (gs://, s3://, a shared file system).
"""

from __future__ import annotations

import itertools
import logging
import os
import zlib

from apache_beam import pvalue
from apache_beam.internal import pickler
from apache_beam.pipeline import PipelineVisitor
from apache_beam.runners.common import DoFnRunner, DoFnSignature, Receiver
from apache_beam.runners.dask.dask_runner import DaskOptions
from apache_beam.runners.dask.dask_runner import DaskRunner as BeamDaskRunner
from apache_beam.runners.dask.overrides import (
    _Create,
    _Flatten,
    _GroupByKeyOnly,
    _Read,
    _Reshuffle,
    dask_overrides,
)
from apache_beam.runners.runner import PipelineResult, PipelineState
from apache_beam.transforms import core, userstate
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.transforms.window import GlobalWindows

from transforms import progress

WAIT_FOR_WORKERS_S = 60  # a scheduler with no worker would leave the run waiting forever

_LOG = logging.getLogger(__name__)


# What the tasks run (module functions: a task pickles a reference to them, not code).


# A partition is (a task's result, tag): the result itself with tag `ALL` (Ellipsis: no tag
# is), else one tag's list from a bundle's {tag: values} (or one piece, by its index, of an
# exchange's split). Taking it inside the task that reads it spares a task per tag and piece.
ALL = ...


def _elements(part: tuple) -> list:
    result, tag = part
    return result if tag is ALL else result.get(tag, [])


def _windowed(payload: bytes) -> list:
    return [GlobalWindows.windowed_value(v) for v in pickler.loads(payload)]


def _concat(*parts) -> list:
    return [wv for part in parts for wv in _elements(part)]


def _count(part) -> int:
    return len(_elements(part))


class _Receivers(dict):
    """Outputs of one bundle by tag; an output to an undeclared tag is dropped, as on
    Beam's direct runners."""

    class _List(Receiver):
        def __init__(self):
            self.values = []

        def receive(self, windowed_value):
            self.values.append(windowed_value)

    class _Drop(Receiver):
        def receive(self, windowed_value):
            pass

    def __init__(self, tags):
        super().__init__({tag: self._List() for tag in tags})

    def __missing__(self, tag):
        return self._Drop()

    def outputs(self) -> dict:
        return {tag: r.values for tag, r in self.items() if isinstance(r, self._List)}


def _run_bundle(payload: bytes, progress_dir: str | None, part: tuple, *sides) -> dict:
    """One partition through a DoFn as one bundle; {tag: windowed values}."""
    fn, args, kwargs, views, windowing, step, tags = pickler.loads(payload)
    receivers = _Receivers(tags)
    side_inputs = [
        SideInputMap(view, options, _elements(side))
        for (view, options), side in zip(views, sides, strict=True)
    ]
    runner = DoFnRunner(
        fn, args, kwargs, side_inputs, windowing, tagged_receivers=receivers, step_name=step
    )
    with progress.joined(progress_dir):
        runner.setup()
        try:
            runner.start()
            for element in _elements(part):
                runner.process(element)
            runner.finish()
        finally:
            runner.teardown()
    return receivers.outputs()


def _route_by_key(coder_payload: bytes, part: tuple, width: int) -> dict:
    """A partition's (key, value) elements cut into `width` pieces by a hash of the encoded
    key that every process computes alike (Python's `hash` of a str does not)."""
    coder = pickler.loads(coder_payload)
    pieces = {j: [] for j in range(width)}
    for wv in _elements(part):
        encoded = coder.encode(wv.value[0])
        pieces[zlib.crc32(encoded) % width].append((encoded, wv))
    return pieces


def _group(*pieces) -> list:
    """(key, [windowed values]) per key, in the order the keys arrive: what Beam's
    GroupAlsoByWindow step (the next ParDo) takes."""
    groups: dict[bytes, tuple] = {}
    for piece in pieces:
        for encoded, wv in _elements(piece):
            key, value = wv.value
            groups.setdefault(encoded, (key, []))[1].append(value)
    return [GlobalWindows.windowed_value(group) for group in groups.values()]


def _spread(index: int, part: tuple, width: int) -> dict:
    """A partition dealt round robin over `width` pieces (from a place its index sets)."""
    pieces = {j: [] for j in range(width)}
    for i, wv in enumerate(_elements(part)):
        pieces[(index + i) % width].append(wv)
    return pieces


# The translation.


class _Translator(PipelineVisitor):
    """Beam primitives to dask Delayed partitions: `colls` maps each PCollection to its list
    of partitions; `targets()` is what to compute for the whole pipeline to run."""

    def __init__(self, width: int, npartitions: int | None, partition_size: int | None):
        self.width, self.npartitions, self.partition_size = width, npartitions, partition_size
        self.colls: dict = {}
        self.read: set[int] = set()
        self.sides: dict[int, object] = {}
        self.steps = itertools.count()
        self.progress_dir = os.environ.get(progress.PROGRESS_DIR) or None

    def _name(self, node) -> str:
        return f"{node.full_label}-{next(self.steps)}"

    def visit_transform(self, node) -> None:
        inputs = [pc for pc in node.inputs if isinstance(pc, pvalue.PCollection)]
        for pc in inputs:
            self.read.add(id(pc))
        transform, name = node.transform, self._name(node)
        if isinstance(transform, _Create):
            out = {None: self._create(name, list(transform.values))}
        elif isinstance(transform, core.Impulse):
            out = {None: [(self._delayed(_windowed, f"{name}-0", pickler.dumps([b""])), ALL)]}
        elif isinstance(transform, core.ParDo):
            out = self._pardo(node, name, inputs[0])
        elif isinstance(transform, _GroupByKeyOnly):
            out = {None: self._group_by_key(node, name, inputs[0])}
        elif isinstance(transform, _Flatten):
            out = {None: [part for pc in inputs for part in self.colls[pc]]}
        elif isinstance(transform, _Reshuffle):
            out = {None: self._exchange(name, self.colls[inputs[0]], _spread, with_index=True)}
        else:
            what = "Read" if isinstance(transform, _Read) else type(transform).__name__
            raise NotImplementedError(
                f"the Dask runner cannot run {node.full_label!r} ({what}): no translation"
            )
        for tag, pc in node.outputs.items():
            self.colls[pc] = out[tag]

    @staticmethod
    def _delayed(fn, key: str, *args):
        import dask

        return dask.delayed(fn, pure=False)(*args, dask_key_name=key)

    def _create(self, name: str, values: list) -> list:
        if not values:
            return []
        if self.partition_size:
            size = self.partition_size
        else:
            count = min(len(values), self.npartitions or self.width)
            size = -(-len(values) // count)
        chunks = [values[i : i + size] for i in range(0, len(values), size)]
        return [
            (self._delayed(_windowed, f"{name}-{i}", pickler.dumps(chunk)), ALL)
            for i, chunk in enumerate(chunks)
        ]

    def _side(self, pc, name: str):
        """A side input's values, computed once (a task) for every task that reads it."""
        self.read.add(id(pc))
        if id(pc) not in self.sides:
            self.sides[id(pc)] = (self._delayed(_concat, f"{name}-side", *self.colls[pc]), ALL)
        return self.sides[id(pc)]

    def _pardo(self, node, name: str, main) -> dict:
        import dask

        transform = node.transform
        fn = transform.fn
        signature = DoFnSignature(fn)
        if userstate.is_stateful_dofn(fn) or signature.is_splittable_dofn():
            kind = "state or timers" if userstate.is_stateful_dofn(fn) else "a splittable DoFn"
            raise NotImplementedError(
                f"the Dask runner cannot run {node.full_label!r}: it uses {kind}"
            )
        sides = [self._side(si.pvalue, f"{name}-{i}") for i, si in enumerate(node.side_inputs)]
        views = [(type(si), si._view_options()) for si in node.side_inputs]
        tags = list(node.outputs)
        payload = pickler.dumps(
            (
                fn,
                getattr(transform, "args", []),
                getattr(transform, "kwargs", {}),
                views,
                main.windowing,
                node.full_label,
                tags,
            )
        )
        # One task holds the DoFn; each bundle's task reads it (sent once per worker).
        shared = dask.delayed(payload, name=f"{name}-fn")
        bundles = [
            self._delayed(_run_bundle, f"{name}-{i}", shared, self.progress_dir, part, *sides)
            for i, part in enumerate(self.colls[main])
        ]
        return {tag: [(bundle, tag) for bundle in bundles] for tag in tags}

    def _group_by_key(self, node, name: str, main) -> list:
        coder = pickler.dumps(_key_coder(main, node.full_label))
        return self._exchange(name, self.colls[main], _route_by_key, coder=coder, join=_group)

    def _exchange(self, name, parts, split, with_index=False, coder=None, join=_concat) -> list:
        """Every partition cut into `width` pieces (by `split`), piece j of each joined into
        output partition j: all-to-all, width x partitions small tasks."""
        width = self.width
        cut = []
        for i, part in enumerate(parts):
            args = (i, part, width) if with_index else (coder, part, width)
            cut.append(self._delayed(split, f"{name}-split-{i}", *args))
        return [
            (self._delayed(join, f"{name}-{j}", *[(pieces, j) for pieces in cut]), ALL)
            for j in range(width)
        ]

    def targets(self) -> list:
        """A count per partition of every PCollection nothing reads: computing them runs
        every step (the data itself stays on the workers and is released)."""
        unread = [parts for pc, parts in self.colls.items() if id(pc) not in self.read]
        ends = [part for parts in unread for part in parts]
        return [self._delayed(_count, f"done-{i}", part) for i, part in enumerate(ends)]


def _key_coder(pcoll, label: str):
    """A deterministic coder for the keys of a (key, value) PCollection."""
    from apache_beam import coders
    from apache_beam.typehints import trivial_inference

    try:
        key_type, _ = trivial_inference.key_value_types(pcoll.element_type)
        return coders.registry.get_coder(key_type).as_deterministic_coder(label)
    except Exception:  # an untyped or unusual key: Beam's encoding of any primitive value
        return coders.FastPrimitivesCoder().as_deterministic_coder(label)


# The run.


class DaskRunResult(PipelineResult):
    """A run on the cluster: waiting gathers only the small counts of `targets()`; any
    failure or Ctrl-C cancels what is still running there, and the client is closed."""

    def __init__(self, client, futures, cluster=None):
        super().__init__(PipelineState.RUNNING)
        self.client, self.futures, self.cluster = client, futures, cluster

    def wait_until_finish(self, duration=None):
        from distributed import as_completed

        if self._state != PipelineState.RUNNING:
            return self._state
        timeout = duration / 1000 if duration is not None else None
        try:
            for _ in as_completed(self.futures, timeout=timeout, with_results=True):
                pass
        except BaseException:
            self._state = PipelineState.FAILED
            self._close(cancel=True)
            raise
        self._state = PipelineState.DONE
        self._close()
        return self._state

    def cancel(self):
        self._close(cancel=True)
        self._state = PipelineState.CANCELLED
        return self._state

    def _close(self, cancel: bool = False) -> None:
        try:
            if cancel:
                self.client.cancel(self.futures, force=True)
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()
        except BaseException as err:  # the run's own outcome is what the caller must see
            _LOG.debug("closing the Dask client: %s", err)

    def metrics(self):
        raise NotImplementedError("the Dask runner collects no metrics (see the run report)")


class DaskRunner(BeamDaskRunner):
    """Beam's DaskRunner with the translation above. Without --dask_client_address (or
    --dask_scheduler_file) it starts a private cluster on 127.0.0.1 for the run."""

    def run_pipeline(self, pipeline, options):
        from distributed import Client, LocalCluster

        given = options.view_as(DaskOptions).get_all_options(drop_default=True, current_only=True)
        npartitions = given.pop("npartitions", None)
        partition_size = given.pop("partition_size", None)
        # Beam's flag would take a bad value as "no timeout"; None is dask's own default.
        if not isinstance(given.get("timeout"), int | float):
            given.pop("timeout", None)
        cluster = None
        if not given.get("address") and not given.get("scheduler_file"):
            cluster = LocalCluster(host="127.0.0.1", dashboard_address=None, processes=True)
            given["address"] = cluster.scheduler_address
        client = Client(**given)
        try:
            wait = given.get("timeout") or WAIT_FOR_WORKERS_S
            try:
                client.wait_for_workers(1, timeout=wait)
            except TimeoutError:
                raise RuntimeError(
                    f"no Dask worker joined the scheduler at {client.scheduler.address} "
                    f"within {wait} s"
                ) from None
            width = npartitions or max(1, sum(client.nthreads().values()))
            pipeline.replace_all(dask_overrides())
            translator = _Translator(width, npartitions, partition_size)
            pipeline.visit(translator)
            futures = client.compute(translator.targets())
        except BaseException:
            client.close()
            if cluster is not None:
                cluster.close()
            raise
        return DaskRunResult(client, futures, cluster)
