"""The project's error types: every user-facing failure is a GuideError.

The command line catches GuideError alone, prints its message on one line (a
config error prints one line per problem) and exits with `exit_code`.
"""

from __future__ import annotations


class GuideError(Exception):
    """A failure the user can fix; `exit_code` 2 means bad usage, config, data or checkpoint."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def lines(self) -> list[str]:
        """The message as printable lines, the hint last."""
        text = self.message if not self.hint else f"{self.message}: {self.hint}"
        return [text]


class ConfigError(GuideError):
    """One or more problems in a config, each prefixed with its path."""

    def __init__(self, problems: list[str] | str, hint: str | None = None, *, source: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        if len(self.problems) == 1:
            message = f"config error{where}: {self.problems[0]}"
        else:
            message = f"{len(self.problems)} config errors{where}"
        super().__init__(message, hint)

    def lines(self) -> list[str]:
        if len(self.problems) == 1:
            return super().lines()
        return [self.message + ":"] + [f"  {p}" for p in self.problems]


class DataError(GuideError):
    """Data that cannot be read or used: missing files, empty folders, bad labels.

    `key` names the dataset argument at fault (`root`, `path` ...), so the code that
    knows which split it was reading can name the config key (`data.test.root`).
    """

    def __init__(self, message: str, hint: str | None = None, *, key: str | None = None) -> None:
        super().__init__(message, hint)
        self.key = key


class CheckpointError(GuideError):
    """A checkpoint that is missing, corrupt, not ours, or does not fit the request."""


class RunFailed(GuideError):
    """The run started but could not finish (diverged, interrupted): exit code 1."""

    exit_code = 1


class RunDirError(GuideError):
    """A run directory that cannot be used: another process runs in it, a file stands in its place,
    or it cannot be written."""
