"""The operator side of fanout: CLI, embedded AWS emulator, publisher and local poller.

None of this ships with the Lambda function (``CodeUri: src/``); it lets people publish work
and run the whole path on one machine.

Modules, one job each:
    cli        the ``fanout`` command and its subcommands
    emulator   moto in server mode and a seeded organisation (ops + target accounts)
    publish    envelopes from CLI arguments, validated by the worker's own parser, sent in batches
    poller     a local stand-in for the Lambda SQS event source mapping
    demo       the embedded end-to-end run (``make demo``) and its report
"""
