"""The fan-out worker: SQS batch in, per-account task runs out.

Modules, one job each:
    app           thin Lambda adapter (Powertools batch processing, metrics, optional tracing)
    settings      validated configuration from the environment
    envelope      message bodies (v1 and legacy) -> jobs
    guard         a whole message is authorized before any STS call
    accounts      which accounts may be targeted (allow-list, OUs, never the worker's own)
    credentials   assumed-role sessions and clients per (account, region, service, policy)
    policy        session policies and the target role, derived from the plugins
    ledger        job records: claims with expiring locks, results, status (DynamoDB/in-memory)
    dispatch      runs the jobs of a batch: claims, plans, lanes, rate limits, retries
    blast_radius  canaries and max_errors while a batch runs
    outcome       how a job ended in one delivery
    ratelimit     adaptive token buckets per (account, region, API)
    retry         tenacity policies bounded by the function's remaining time
    deadline      the time budget of the invocation
    requeue       deferral: retry targets re-sent with a growing delay
    deadletter    permanent failures to the dead-letter queue, with their reason
    telemetry     per-batch metrics (EMF)
    worker        one batch end to end: parse, authorize, dispatch, settle each SQS record
    exceptions    the error hierarchy and the one place AWS errors are classified
"""
