"""The ``effnet-tl`` subcommands beyond ``fit`` and ``demo``: one module per command, each with
``add_parser(subparsers)`` (its arguments and ``--help``) and ``run(args)`` (its exit status).

:mod:`effnet_tl.cli` owns the parser, the quiet start-up and the one-line errors; a module here
prints its machine-readable result on stdout and its progress on stderr.
"""

#: Command name -> module, in ``effnet-tl --help`` order.
COMMANDS = {
    "doctor": "effnet_tl.commands.doctor",
    "predict": "effnet_tl.commands.predict",
    "evaluate": "effnet_tl.commands.evaluate",
    "export": "effnet_tl.commands.export",
    "variants": "effnet_tl.commands.variants",
    "scale": "effnet_tl.commands.scale",
    "scale-search": "effnet_tl.commands.scale_search",
    "launch": "effnet_tl.commands.launch",
}
