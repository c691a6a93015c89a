"""The fan-out worker: SQS batch in, per-account task runs out.

Modules, one job each (docs/architecture.md has the same map, docs/life-of-a-job.md the rules):
    app            Lambda adapter (metrics, tracing) and composition root (build_worker)
    settings       validated configuration from the environment
    contract       the message contract: schemas, patterns, limits, attributes, body splitting
    envelope       a body -> jobs; bodies_for builds bodies back for re-sends and letters
    authorization  which accounts a message may enter (before any STS call)
    sessions       role sessions: STS, refreshable credentials, role ARNs
    clients        boto3 clients: the worker's own, and per target
    policy         session policies and the target role, derived from the plugins
    worker         one batch end to end: admit, dispatch, decide, settle, count
    dispatch       a batch's jobs -> lanes of calls, run in parallel
    attempt        one call: claim its jobs, make it, record each end
    execute        making one call: pacing, retries, recovery, dry-run pre-flight
    ratelimit      adaptive token buckets per (account, region, API)
    ratelimit_shared  one quota for every instance: call start times leased from the table
    retry          tenacity policies bounded by the function's remaining time
    deadline       the time budget of the invocation
    durations      expected call durations (when a call may still start)
    outcome        how a job ended in one delivery
    lifecycle      THE decision (pure): outcomes -> letters, deferrals; the throttling policy
    settle         carries a decision out: letters (via letters), re-sends, acknowledgement
    letters        dead letters: hold, send, mark; cancelled jobs; whole messages
    requeue        deferral: retry targets re-sent with a growing delay
    deadletter     the dead-letter queue, with reasons
    sqs            records in, the batch response out
    ledger         job states, claim rules, the Ledger protocol and its invariants
    ledger_dynamodb, ledger_items, ledger_memory   the ledger in DynamoDB and in memory
    dynamo         one table's client, conditional writes and transactions
    requests, requests_dynamodb, requests_memory   request records and request-wide controls
    tracking       the worker's side of request records: read before a batch, count after
    completion     a finished request's event and export, announced once
    telemetry      per-batch metrics (EMF)
    exceptions     the error hierarchy and the one place AWS errors are classified
    api            what the operator tools (scripts/fanout) may import: nothing else of handler
"""
