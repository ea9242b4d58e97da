"""Start-up, errors and interruption, shared by every command: TensorFlow's start-up noise kept
quiet, the one-line errors of bad input (UserError), the argument parser that reports them,
warnings, and Ctrl-C / SIGTERM deferred to safe points while training (deferred_interrupts,
stop_if_asked).

    import utils          # first, before anything imports TensorFlow
    utils.start_tensorflow()
    sys.exit(utils.run_command(main, build_parser(), argv))

The other shared pieces live in files named for them: image_io.py (still images, the pixel range),
animation.py (GIFs, videos), files.py (atomic writes, JSON), data.py (the training pipeline),
progress.py (bars, plots).
"""
import argparse
import contextlib
import os
import signal
import sys
import tempfile
import threading

# TensorFlow is imported inside the functions that need it, so download.py, which only
# writes images, starts in a fraction of a second. The one thing done on import: TensorFlow's C++
# info and warning lines stay quiet (this only works before TensorFlow loads, so the commands import
# utils first); its start-up lines printed before its logging is set up are filtered by
# start_tensorflow().
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# TensorFlow's start-up lines that alarm without telling anything on a machine without a GPU (or
# say only what it is built for); any other line printed while they are filtered is kept.
STARTUP_NOISE = ("All log messages before absl::InitializeLog() is called are written to STDERR",
                 "oneDNN custom operations are on", "Could not find cuda drivers", "failed call to cuInit",
                 "Unable to register cuDNN factory", "Unable to register cuFFT factory",
                 "Unable to register cuBLAS factory", "computation placer already registered",
                 "This TensorFlow binary is optimized to use available CPU instructions",
                 "rebuild TensorFlow with the appropriate compiler flags", "TF-TRT Warning: Could not find TensorRT",
                 # Grappler's remapper declining a fusion while the training step is first traced: harmless
                 "remapper failed: INVALID_ARGUMENT: Mutation::Apply error")
VERBOSE_ENV = "CYCLEGAN_VERBOSE"


def verbose():
    """True with --verbose on the command line or CYCLEGAN_VERBOSE set (not 0): show TensorFlow's
    start-up lines. Read from sys.argv because TensorFlow starts before the flags are parsed."""
    return "--verbose" in sys.argv[1:] or os.environ.get(VERBOSE_ENV, "0") not in ("", "0")


@contextlib.contextmanager
def tensorflow_noise_hidden():
    """Within it, file descriptor 2 goes to a temporary file; on leaving, what was caught is printed
    except the STARTUP_NOISE lines (everything with verbose()). For TensorFlow's C++ lines, which no
    Python setting reaches."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().decode(errors="replace").splitlines(keepends=True)
                    if not any(n in line for n in STARTUP_NOISE)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def start_tensorflow():
    """Imports TensorFlow and probes its devices with its noise hidden (tensorflow_noise_hidden):
    it writes those lines from C++ before its logging honours TF_CPP_MIN_LOG_LEVEL (twice: two of
    its libraries each start the logger), and logs the failed CUDA probe of a machine without a GPU
    as an error; real warnings and errors still show. The commands call it right after importing utils."""
    if "tensorflow" in sys.modules:
        return
    with tensorflow_noise_hidden():
        import tensorflow as tf
        tf.config.list_physical_devices()


class UserError(Exception):
    """A problem with the user's input, reported as one line without a traceback (exit status 1)."""


class UsageError(UserError):
    """A command line that cannot work (an unknown flag, a value past its bound, flags that
    contradict each other): one line, exit status 2 as argparse's."""


# The exit statuses of every command (docs/OPTIONS.md states them).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


@contextlib.contextmanager
def checking_flags():
    """The UserErrors raised inside are the command line's (UsageError): for the checks of parsed flags."""
    try:
        yield
    except UsageError:
        raise
    except UserError as e:
        raise UsageError(str(e)) from None


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each flag's default after its help, unless it has none or the help already says it."""

    def _get_help_string(self, action):
        if action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose errors (an unknown flag, a value not among the choices) are a
    UserError: one line and the command's own exit status, not the usage text and status 2.
    --help shows every default there is; a flag is taken only as spelled in full (no abbreviations)."""

    def __init__(self, **kwargs):
        # No prefixes of flags: --dataset is not download.py's --datasets, nor --n_epoch --n_epochs.
        super().__init__(formatter_class=_HelpFormatter, allow_abbrev=False, **kwargs)

    def error(self, message):
        raise UsageError(message)


def run_command(fn, parser, argv):
    """A command's main(): fn(parser.parse_args(argv))'s exit status, or, for a UserError, one
    "error:" line on stderr and EXIT_USAGE (a UsageError) or EXIT_FAILED; interrupted (Ctrl-C), one
    "interrupted:" line and EXIT_INTERRUPTED, never a traceback."""
    try:
        return fn(parser.parse_args(argv))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE if isinstance(e, UsageError) else EXIT_FAILED
    except KeyboardInterrupt:  # -- Ctrl-C or SIGTERM-as-interrupt, where the command has no own handling
        print("interrupted: stopped; what was finished is kept, nothing half-written is left "
              "(run the same command again to go on)", file=sys.stderr)
        return EXIT_INTERRUPTED


_stop_asked = []  # the signals received while interrupts are deferred (see deferred_interrupts)


@contextlib.contextmanager
def deferred_interrupts():
    """Ctrl-C and SIGTERM (what a job scheduler or `kill` sends before SIGKILL) inside this block ask
    to stop at the next safe point, where stop_if_asked() raises KeyboardInterrupt; a second one
    raises it at once. Python's own Ctrl-C raises wherever the main thread is, TensorFlow's Python
    code included, and a training process stopped that way mid-step sometimes aborted in glibc (a
    corrupted heap). In the main thread only (signals reach no other); the previous handlers and
    nothing asked are left after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ask(signum, frame):
        _stop_asked.append(signum)
        if len(_stop_asked) > 1:
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, ask) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop_asked.clear()


def stop_if_asked():
    """A safe point to stop at: raises KeyboardInterrupt if a Ctrl-C or SIGTERM came in a
    deferred_interrupts block."""
    if _stop_asked:
        raise KeyboardInterrupt


def first_line(error, limit=200):
    """The first line of an exception's message (or its type's name), at most `limit` characters:
    what a one-line error shows of a library's long report."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


def warn(message):
    """Prints one warning line on stderr."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
