"""The operator side of fanout: CLI, embedded AWS emulator, publisher and local poller.

None of this ships with the Lambda function (``CodeUri: src/``); it lets people publish work
and run the whole path on one machine.

Modules, one job each:
    cli        the ``fanout`` command and its subcommands
    emulator   moto in server mode and a seeded organisation (ops + target accounts)
    publish    envelopes from CLI arguments, validated by the worker's own parser, sent in batches
    poller     a local stand-in for the Lambda SQS event source mapping
    demo       the embedded end-to-end run (``make demo``) and its report
    status     per-target state of a request from the ledger, refreshed from target accounts
    redrive    dead letters back to the work queue (message-move task or filtered copy loop)
    catalog    what the plugins declare, for people: parameter tables, policy YAML
    console    terminal output: tables, colours, progress bar, one-line errors
"""
