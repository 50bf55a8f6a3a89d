"""Predicting an input of any length: batches answered in order as they are computed, morpheme
analysis of the next batches in worker processes while this process runs the networks."""
from __future__ import annotations

import contextlib
import itertools
from collections import deque
from collections.abc import Iterable, Iterator

from pipeline.errors import PipelineError


def stream_records(model, batches: Iterable[list[str]], workers: int, batch_size: int,
                   pool_after: int) -> Iterator[list[dict]]:
    """`model.predict` of each batch of texts, in order, as soon as it is computed (any Predictor).

    Memory holds a few batches, whatever the input's length. With workers > 1, once more than
    `pool_after` texts have come (a pool costs a start-up, worth it for large inputs only), the
    morpheme analysis of the next batches runs in worker processes (one pool per analyzed
    member) while this process runs the networks on the current one. If reading `batches`
    fails (PipelineError, e.g. a line that is not UTF-8), the batches read before are answered first.
    """
    batches = iter(batches)
    analyzed = model.analyzed_members() if workers > 1 else []
    seen = 0
    for texts in batches:
        yield model.predict(texts, batch_size)
        seen += len(texts)
        if analyzed and seen > pool_after:
            break
    else:
        return
    upcoming = next(batches, None)             # no pool for an input that has just ended
    if upcoming is None:
        return
    batches = itertools.chain([upcoming], batches)
    with contextlib.closing(analysed_ahead(analyzed, batches, workers, ahead=workers)) as ahead:
        for texts, pending_ids in ahead:
            yield model.finish(texts, pending_ids, batch_size)


def analysed_ahead(members: list, batches: Iterable[list[str]], workers: int,
                   ahead: int) -> Iterator[tuple[list[str], dict]]:
    """Each batch of texts with each of `members`' padded ids of it (pending SegmentPool results, by
    id(member): `.ids()`), in order; the preprocessing (normalize, morpheme analysis, ids) of up to `ahead`
    batches after it runs meanwhile in worker processes (one pool per member) while the caller works on
    this one. No members: no pool, `{}`.

    If reading `batches` fails (PipelineError, e.g. a line that is not UTF-8), the batches read before
    are yielded first. Close the generator (`contextlib.closing`) to stop the workers at once when the
    caller fails or is interrupted, not when the traceback is freed.
    """
    batches = iter(batches)
    if not members:
        yield from ((texts, {}) for texts in batches)
        return
    from pipeline.text.pool import SegmentPool  # here: one review on the command line needs no pool

    with contextlib.ExitStack() as stack:
        pools = {id(m): stack.enter_context(SegmentPool(m.preprocessor.segmenter, workers, preprocessor=m.preprocessor))
                 for m in members}
        pending: deque = deque()
        while True:
            try:
                texts = next(batches)
            except StopIteration:
                break
            except PipelineError:               # a bad line: the batches before it first, then report it
                while pending:
                    yield pending.popleft()
                raise
            pending.append((texts, {id(m): pools[id(m)].submit_ids([m.cap(t) for t in texts]) for m in members}))
            if len(pending) > ahead:
                yield pending.popleft()
        while pending:
            yield pending.popleft()
