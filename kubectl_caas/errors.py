"""The project's one root error and its exit codes.

Everything a user can cause is raised as :class:`CaasError`; the entry points turn it into one
line on stderr and an exit code. Standard library only: the get-token hot path imports this.
"""
from __future__ import annotations

TYPE_CHECKING = False  # importing typing costs ~3 ms on every kubectl command
if TYPE_CHECKING:
    from typing import Optional

# Exit codes, documented in every command's --help.
EXIT_ERROR = 1  # anything not listed below
EXIT_USAGE = 2  # bad command line or configuration
EXIT_AUTH = 3  # the identity provider refused the credentials
EXIT_NETWORK = 4  # could not reach the server, TLS failure, timeout
EXIT_LOGIN_REQUIRED = 5  # nothing left to renew with silently: run `login`

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 error; 2 bad usage or configuration; 3 credentials refused; "
    "4 network or TLS failure; 5 login required."
)


class CaasError(Exception):
    """An error meant for the user: a message saying what went wrong and a hint saying what to do."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, hint: Optional[str] = None, exit_code: Optional[int] = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}; {self.hint}"
        return self.message


def report(command: str, exc: Optional[BaseException], message: Optional[str] = None) -> None:
    """The one line a user sees when a command ends badly: `<command>: error: <message>; <hint>`
    for an error, or `<command>: <message>` (say, "interrupted"). get-token, both CLIs and the
    completion helpers all end through here, and through report_unexpected."""
    from kubectl_caas.terminal import show

    show(f"{command}: error: {exc}" if exc is not None else f"{command}: {message}")


def report_unexpected(command: str, exc: BaseException, debug: bool) -> int:
    """A bug of ours: one line asking for a report (the traceback only with --debug); exit 1."""
    if debug:
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__)
    report(command, None, f"unexpected error: {type(exc).__name__}: {exc} (rerun with --debug for details and "
                          "report it)")
    return EXIT_ERROR


class UsageError(CaasError):
    exit_code = EXIT_USAGE


class AuthError(CaasError):
    exit_code = EXIT_AUTH


class NetworkError(CaasError):
    exit_code = EXIT_NETWORK


class LoginRequired(CaasError):
    exit_code = EXIT_LOGIN_REQUIRED
