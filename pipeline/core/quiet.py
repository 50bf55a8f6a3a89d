"""Import Keras/TensorFlow without their start-up chatter on stderr.

TensorFlow's native code writes ~6 lines straight to file descriptor 2 while it is
imported ("All log messages before absl::InitializeLog() ...", the oneDNN notice,
"Could not find cuda drivers", the CPU feature guard), whatever TF_CPP_MIN_LOG_LEVEL
says, and more at the first model call ("failed call to cuInit", "oneDNN supports
DT_BOOL only ..."). None of it is for ksent's users, so by default `import_keras`
sends fd 2 to a temporary file during the import (replayed if the import fails) and
sets TF_CPP_MIN_LOG_LEVEL=3 and the Python TensorFlow/absl loggers to ERROR for what
comes later. oneDNN stays on (TF_ENABLE_ONEDNN_OPTS is left alone: turning it off
would change the numbers), only its notice is hidden.

Set KSENT_VERBOSE=1 (or run `ksent --verbose ...`) to see everything, as TensorFlow prints it.

Being where ksent loads TensorFlow, `import_keras` also sets what TensorFlow reads once at start:
TF_CPU_ALLOCATOR_USE_BFC=true unless the user set it (see `pooled_cpu_memory`).
"""
from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

ENV = "KSENT_VERBOSE"
_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
_ALLOCATOR = "TF_CPU_ALLOCATOR_USE_BFC"
_level_is_ours = False   # set by default_log_level(), so that set_verbose() can take it back


def enabled() -> bool:
    """True (quiet) unless KSENT_VERBOSE is set to something other than "", 0, false, no or off."""
    return os.environ.get(ENV, "").strip().lower() in ("", "0", "false", "no", "off")


def default_log_level() -> None:
    """TF_CPP_MIN_LOG_LEVEL=3 unless verbose or set by the user: for code that imports
    TensorFlow without `import_keras` (a safety net: ksent itself imports it only after `import_keras`).
    Call before TensorFlow loads."""
    global _level_is_ours
    if enabled() and _LEVEL not in os.environ:
        os.environ[_LEVEL], _level_is_ours = "3", True


def set_verbose() -> None:
    """What `--verbose` does: KSENT_VERBOSE=1 for this process (and the ones it starts), and
    TensorFlow's own log level, unless the user set TF_CPP_MIN_LOG_LEVEL."""
    os.environ[ENV] = "1"
    if _level_is_ours:
        os.environ.pop(_LEVEL, None)


def pooled_cpu_memory() -> None:
    """TensorFlow's pooling (BFC) allocator on the CPU, unless the user chose. The default one maps fresh
    pages for each step's tensors until the process has grown: ~2.4 million page faults per 100 batches
    made distill's first epoch ~1.5x as long as the next. The same weights to the bit either way
    (docs/results.md). Read when TensorFlow makes its CPU allocator: call before TensorFlow loads."""
    os.environ.setdefault(_ALLOCATOR, "true")


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()


@contextlib.contextmanager
def silenced_fd2() -> Iterator[None]:
    """Send file descriptor 2 (native and Python writes alike) to a temporary file.

    If the block raises, what was captured is written to the real stderr before the
    exception propagates; a native crash (abort, illegal instruction) still gets a
    faulthandler report on the real stderr.
    """
    try:
        saved = os.dup(2)
    except OSError:   # stderr closed (`2>&-`): nothing to silence
        yield
        return
    failed = False
    faulthandler_was_on = faulthandler.is_enabled()
    with tempfile.TemporaryFile() as capture:
        _flush()
        os.dup2(capture.fileno(), 2)
        faulthandler.enable(file=saved)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            _flush()
            os.dup2(saved, 2)
            faulthandler.disable()
            if faulthandler_was_on and sys.stderr is not None:
                with contextlib.suppress(AttributeError, OSError, ValueError):   # stderr without fileno()
                    faulthandler.enable(file=sys.stderr)
            os.close(saved)
            if failed:
                capture.seek(0)
                data = capture.read()
                while data:
                    data = data[os.write(2, data):]


def import_keras(quiet: bool | None = None):
    """`import keras` (and its TensorFlow backend), silently unless asked; returns the module.

    quiet: None reads KSENT_VERBOSE (see `enabled`). Only the first import in a
    process can be silenced: call this before anything else imports TensorFlow.
    """
    pooled_cpu_memory()
    if not (enabled() if quiet is None else quiet):
        import keras
        return keras
    os.environ[_LEVEL] = "3"   # read by TensorFlow's native logging when it loads
    with silenced_fd2():
        import keras
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    with contextlib.suppress(ImportError):
        from absl import logging as absl_logging
        absl_logging.set_verbosity(absl_logging.ERROR)
    return keras
