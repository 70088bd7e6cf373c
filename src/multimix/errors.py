"""The one exception type users see as a one-line message."""


class InputError(Exception):
    """Bad or missing input. The message names the file and what was expected.

    The CLI prints it as a single line (`multimix: error: …`) and exits 2,
    without a traceback: it is the user's data or configuration that needs
    fixing, not the code.
    """
