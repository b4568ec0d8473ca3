"""The one error type every command raises for a user-facing failure.

The CLI catches it once, prints ``Error: <message>`` on one line and exits with
``exit_code``; anything else reaching the top is a bug and is reported as one.
"""

from __future__ import annotations


class HostError(Exception):
    """A failure the user can act on: ``message`` says what is wrong and what to do."""

    def __init__(self, message: str, *, exit_code: int = 1, details: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        # Extra context (log tails, diffs) printed after the one-line error.
        self.details = details

    def __str__(self) -> str:
        return self.message


class ConfigError(HostError):
    """The host configuration is invalid; ``problems`` holds one line per problem."""

    def __init__(self, source: str, problems: list[str],
                 hint: str = "fix the file (or use `pixsim-host config set`) and retry") -> None:
        noun = "problem" if len(problems) == 1 else "problems"
        head = f"{source} has {len(problems)} {noun}: " + "; ".join(problems)
        super().__init__(f"{head}; {hint}", exit_code=2)
        self.problems = problems


class NotSupportedByRuntime(HostError):
    """The host's runtime cannot do what was asked (a capability it lacks)."""

    def __init__(self, message: str, *, runtime: str, capability: str) -> None:
        super().__init__(message)
        self.runtime = runtime
        self.capability = capability


class EngineUnavailable(HostError):
    """No usable Docker Engine: ``problem`` says what is wrong, ``todo`` what to do."""

    def __init__(self, problem: str, todo: str) -> None:
        super().__init__(f"{problem}; {todo}")
        self.problem = problem
        self.todo = todo


class ContainerCommandFailed(HostError):
    """A command run inside a container exited non-zero; ``output`` is all it printed."""

    def __init__(self, command: str, exit_code: object, output: str) -> None:
        lines = [line for line in output.strip().splitlines() if line.strip()]
        said = lines[-1][:300] if lines else "no output"  # the error is said last
        super().__init__(f"{command} failed in the container (exit {exit_code}): {said}")
        self.command = command
        self.output = output
