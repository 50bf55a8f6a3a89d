"""pipeline.core.progress: one rewritten line on a terminal; in a log only the step lines, no carriage returns."""
from __future__ import annotations

import io

from pipeline.core.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def show(stream) -> str:
    progress = Progress(stream)
    progress.transient("batch 1/3")
    progress.line("epoch 1/2: loss 0.5")
    progress.transient("batch 2/3")
    progress.line("epoch 2/2: loss 0.4")
    progress.close()
    progress.close()                            # a second close adds nothing
    return stream.getvalue()


def test_a_log_gets_one_line_per_step_and_a_terminal_one_rewritten_line():
    assert show(io.StringIO()) == "epoch 1/2: loss 0.5\nepoch 2/2: loss 0.4\n"
    assert show(Terminal()) == ("\rbatch 1/3\033[K\repoch 1/2: loss 0.5\033[K\rbatch 2/3\033[K"
                                "\repoch 2/2: loss 0.4\033[K\n")


def test_blockwise_shows_rows_on_a_terminal_only_and_returns_what_one_call_would():
    import numpy as np

    from pipeline.core.progress import blockwise

    rows, calls = np.arange(25), []

    def double(block):
        calls.append(len(block))
        return block * 2

    terminal, log = Terminal(), io.StringIO()
    assert np.array_equal(blockwise(double, rows, "evaluate x", block=10, stream=terminal), rows * 2)
    assert calls == [10, 10, 5]
    assert terminal.getvalue() == ("\revaluate x: rows 0/25\033[K\revaluate x: rows 10/25\033[K"
                                   "\revaluate x: rows 20/25\033[K\revaluate x: rows 25/25\033[K\n")
    assert np.array_equal(blockwise(double, rows, "evaluate x", block=10, stream=log), rows * 2)
    assert log.getvalue() == ""
