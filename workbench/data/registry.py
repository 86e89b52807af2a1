"""The task registry: ``TASKS`` maps a name to a :class:`~workbench.data.task.Task` value."""

from __future__ import annotations

from workbench.data.task import Task
from workbench.data.tasks.code import CODE
from workbench.data.tasks.math import MATH
from workbench.data.tasks.nlu import NLU
from workbench.data.tasks.safety import SAFETY
from workbench.errors import ConfigError
from workbench.registry import Registry

TASKS: Registry[Task] = Registry("task")

for _task in (SAFETY, MATH, CODE, NLU):
    TASKS.add(_task.name, _task, reference=_task.source)


def get_task(name_or_task: str | Task, **options) -> Task:
    """Look a task up by name (or pass a Task through) and apply options.

    Args:
        name_or_task: a registered name (``safety``, ``math``, ``code``, ``nlu``, or one added with
            ``TASKS.add``) or a Task value.
        **options: field overrides such as ``safety_fraction=0.2`` or ``on_error="refuse"``.

    Returns:
        The task, with the options applied.

    Raises:
        ConfigError: unknown task or option (with the valid names and a did-you-mean).
    """
    task = name_or_task if isinstance(name_or_task, Task) else TASKS.get(str(name_or_task))
    if not isinstance(task, Task):
        raise ConfigError(f"task registry entry '{name_or_task}' is not a Task")
    return task.with_options(**options) if options else task


def register_task(task: Task) -> Task:
    """Add a task (e.g. from :func:`~workbench.data.tasks.custom.custom_task`) to ``TASKS``.

    Raises:
        ConfigError: a different task is already registered under that name.
    """
    try:
        TASKS.add(task.name, task, reference=task.source)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return task
