"""A new task in one file: ``capitals``, question/answer pairs read from ``capitals.jsonl`` beside this file.

A task from a local file needs no Python at all (a pipeline's ``tasks:`` section, workbench/pipeline/SCHEMA.md);
a plugin registers one for every pipeline that lists it. As a built-in: a module in
``workbench/data/tasks/`` registered in ``workbench/data/registry.py``.
"""

from pathlib import Path

import workbench

workbench.register_task(workbench.custom_task(
    "capitals", str(Path(__file__).with_name("capitals.jsonl")), prompt_field="question", response_field="answer",
    description="capital cities (an example task)", license="CC0"))
