"""Tasks, datasets, shipped samples, prompt formatting and tokenization.

``TASKS`` holds the built-in tasks (safety, math, code, nlu); ``custom_task`` defines more from a file or
a hub dataset. Records are plain dicts (``{"prompt", "response"}`` for training); ``train_dataset`` gives
a ``datasets.Dataset``. ``format_prompt`` / ``tokenize_records`` turn them into model inputs.
"""

from workbench.data.prompts import format_prompt, tokenize_pair, tokenize_records
from workbench.data.readers import DataError
from workbench.data.registry import TASKS, get_task, register_task
from workbench.data.task import Task
from workbench.data.tasks.custom import custom_task

__all__ = ["DataError", "TASKS", "Task", "custom_task", "format_prompt", "get_task", "register_task",
           "tokenize_pair", "tokenize_records"]
