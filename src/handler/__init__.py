"""The fan-out worker: SQS batch in, per-account task runs out.

Modules, one job each:
    app          thin Lambda adapter (Powertools batch processing)
    settings     validated configuration from the environment
    envelope     message bodies (v1 and legacy) -> jobs
    credentials  assumed-role sessions and clients per (account, region, service)
    dispatch     runs the jobs of a batch: coalescing, concurrency, rate limits, retries
    ratelimit    token buckets per (account, region, API)
    retry        tenacity policies bounded by the function's remaining time
    deadletter   permanent failures to the dead-letter queue, with their reason
    worker       one batch end to end: parse, dispatch, settle each SQS record
    exceptions   the error hierarchy and the one place AWS errors are classified
"""
