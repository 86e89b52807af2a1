"""One module per CLI command; each exposes ``add_parser(subparsers)`` (see workbench/cli.py)."""


def add_list_option(parser, *flags: str, **kwargs) -> None:
    """A repeatable list option: ``--x a b`` and ``--x a --x b`` both give ``[a, b]``.

    (``nargs="+"`` alone keeps only the last occurrence: ``--exclude m1 --exclude m2`` silently dropped
    ``m1``, so a chain built on the command line could overlap an earlier mask.)
    """
    kwargs.setdefault("default", [])
    parser.add_argument(*flags, nargs="+", action="extend", **kwargs)


def add_trust_remote_code(parser, what: str = "the base model", pipeline: bool = False) -> None:
    """``--trust-remote-code``: the one place a user consents to running a model repository's own code.

    Args:
        what: the model the flag concerns, for the help text.
        pipeline: the command reads a pipeline file, where the flag is consent to the file's
            ``base.trust_remote_code: true`` (refused without it) rather than a switch.
    """
    text = f"let {what} run Python code from its model repository (transformers' trust_remote_code; off by default)"
    if pipeline:
        text = ("consent to the pipeline's base.trust_remote_code: true, which lets the base model run Python code "
                "from its model repository (refused without this flag)")
    parser.add_argument("--trust-remote-code", action="store_true", help=text)


def add_allow_plugins(parser) -> None:
    """``--allow-plugins``: consent to importing the Python files a pipeline names under ``plugins:``."""
    parser.add_argument("--allow-plugins", action="store_true", default=None,
                        help="import and run the Python files the pipeline lists under plugins: (off by default: "
                             "a pipeline file is data; also WORKBENCH_ALLOW_PLUGINS=1)")


def add_protocol(parser) -> None:
    """``--protocol NAME``: the named bundle of settings a pipeline or chain runs under (workbench/protocols.py)."""
    from workbench.protocols import PROTOCOLS

    parser.add_argument("--protocol", choices=list(PROTOCOLS), default=None,
                        help="settings bundle: workbench (ours, the default) or official (the official LoRI "
                             "code's settings; for a chain, the official continual protocol); replaces the "
                             "file's protocol:, and explicit settings still win")
