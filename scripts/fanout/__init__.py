"""The operator side of fanout: CLI, embedded AWS emulator, publisher and local poller.

None of this ships with the Lambda function (``CodeUri: src/``); it lets people publish work
and run the whole path on one machine. It reaches the worker through ``handler.api`` only.

Modules, one job each:
    cli           the ``fanout`` click group and ``main``, the one error path
    commands/     one module per verb (demo, emulator, publish, poll, status, redrive, tasks,
                  policy): its options, declared with click, and its output
    options       options several verbs share (output format, region, queue URLs)
    errors        exit codes and ``CliError``
    console       terminal output with rich: tables, colours, progress, one-line errors
    emulator      moto in server mode and a seeded organisation (ops + target accounts)
    publish       envelopes from arguments, validated by the worker's own parser, sent in tens
    poller        a local stand-in for the Lambda SQS event source mapping
    invoker       how the poller invokes the handler: in a warm child process killed at the timeout
    runtime       that child process (``python -m fanout.runtime``): Init, then one call per event
    wire          the messages between the two (length-prefixed JSON)
    context       the Lambda-like ``context`` object both sides build
    local_worker  the worker's environment for local runs: quiet, logging to stderr
    demo          the embedded end-to-end run (``make demo``) and its report
    status        per-target state of a request from the ledger, refreshed from target accounts
    redrive       dead letters back to the work queue (message-move task or filtered copy loop)
    catalog       what the plugins declare, for people: parameter tables, policy YAML
"""
